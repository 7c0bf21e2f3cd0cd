"""Record a real conversation with the real model, export it, replay it: it passes.

The whole loop a store owner uses to turn a live conversation into a regression test:
an in-process server with the real answering pipeline (SmolLM2 + retrieval over the demo
store), a conversation over the socket, ``export_conversation``, and a replay of the
exported YAML against the same server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatbot.replay.checks import DatabaseEvidence
from chatbot.replay.environment import InProcessServer
from chatbot.replay.format import ShopperTurn, StoreFixture, loads
from chatbot.replay.recorder import export_conversation
from chatbot.replay.report import transcript_diff
from chatbot.replay.runner import Replayer
from chatbot.settings import Settings

pytestmark = [pytest.mark.model, pytest.mark.slow]

CONVERSATION = """
name: recorded live
store: demo
identity: {customer: harper_jackson_8530}
turns:
  - shopper: "What's the tracking number for #NW10822?"
  - shopper: How long does standard shipping take?
  - shopper: I want to talk to a human
"""


async def test_export_of_a_model_conversation_replays_green(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = Settings.from_env()
    if not settings.model_path.exists():
        pytest.skip(f"the model is not pulled ({settings.model_path})")
    pytest_cache = getattr(request.config, "cache", None)
    cache = (
        Path(pytest_cache.mkdir("chatbot-replay-index"))
        if pytest_cache is not None
        else settings.data_dir / "replay-index-cache"
    )
    async with InProcessServer(settings, [StoreFixture("demo")], index_cache=cache) as target:
        replayer = Replayer(target, evidence=DatabaseEvidence(target.db))
        [live] = loads(CONVERSATION, tmp_path / "live.yaml")
        recorded = await replayer.run(live)
        assert recorded.passed, transcript_diff(recorded)
        assert recorded.conversation_id is not None

        recording = await asyncio.to_thread(
            export_conversation, target.db, recorded.conversation_id
        )
        [exported] = loads(recording.yaml(), tmp_path / "exported.yaml")
        first = exported.steps[0]
        assert isinstance(first, ShopperTurn)
        assert [str(c) for c in first.expect.cites] == ["order #NW10822"]
        assert first.expect.no_unsupported_claims
        last = exported.steps[-1]
        assert isinstance(last, ShopperTurn) and last.expect.handoff is True

        replayed = await replayer.run(exported)
        assert replayed.passed, transcript_diff(replayed)
