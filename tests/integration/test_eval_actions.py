"""``chatbot eval actions`` end to end: a scripted τ customer plays a dev task over the real
socket (hello / message frames) against an in-process server, and the exported state is
scored as τ-bench does (issue #19)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chatbot.actions.tau import load_tasks
from chatbot.evaluation import actions as A
from chatbot.replay.environment import REPLAY_LIMITS
from chatbot.settings import Settings

REPO = Path(__file__).resolve().parents[2]
TAU = REPO.parent / "shared" / "datasets" / "tau_retail"

pytestmark = pytest.mark.skipif(not (TAU / "orders.json").exists(), reason="no ../shared τ data")


def _settings(tmp_path: Path) -> Settings:
    base = Settings.from_env()
    return dataclasses.replace(base, data_dir=tmp_path, limits=REPLAY_LIMITS,
                               database_url=f"sqlite:///{tmp_path / 'unused.db'}")


async def _play(tmp_path: Path, engine: object, index: int) -> A.TaskResult:
    settings = _settings(tmp_path)
    runner = A.ActionEval(settings, TAU, engine, tmp_path / "actions")
    start = getattr(engine, "start", None)
    if start is not None:
        await start()
    try:
        return await runner.run_task(load_tasks(TAU, "dev")[index] | {"task_index": index,
                                                                       "split": "dev"})
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            await close()


@pytest.mark.slow
async def test_a_dev_exchange_task_over_the_socket_without_the_model(tmp_path: Path) -> None:
    from chatbot.training.build import load_tokenizer

    settings = Settings.from_env()
    if not settings.model_path.exists():
        pytest.skip(f"no tokenizer: the model is not pulled ({settings.model_path})")
    result = await _play(tmp_path, A.SilentEngine(load_tokenizer(settings.model_path)), 1)
    assert result.error == "" and result.reward == 1.0, result.differences
    assert result.outcomes == ["foreign_refused", "executed"]  # someone else's order first
    assert result.executed == 1
    assert result.writes_without_yes == 0 and result.cross_customer_writes == 0
    said = [text for role, text in result.transcript if role == "customer"]
    assert said[0].startswith("Hi, my email is") and said[-1].startswith(("Yes", "Sure"))


@pytest.mark.model
@pytest.mark.slow
async def test_a_dev_task_with_a_no_path_over_the_socket_with_the_model(tmp_path: Path) -> None:
    from chatbot.engine.engine import Engine

    settings = Settings.from_env()
    if not settings.model_path.exists():
        pytest.skip(f"the model is not pulled ({settings.model_path})")
    engine = Engine.load(_settings(tmp_path))
    # Task 17: the customer asks about the order and keeps everything: nothing is written.
    result = await _play(tmp_path, engine, 17)
    assert result.error == "" and result.reward == 1.0, result.differences
    assert result.executed == 0
