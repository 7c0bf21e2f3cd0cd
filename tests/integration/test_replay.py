"""Replay runner against a real in-process server (scripted answerer): failures, diffs, export.

The server, sockets, database, demo store, agent console and ownership rules are real;
only the answerer is ``FakeAnswerer``, scripted to say something right or wrong.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatbot.replay.checks import DatabaseEvidence
from chatbot.replay.environment import InProcessServer, Target
from chatbot.replay.format import StoreFixture, loads
from chatbot.replay.recorder import export_conversation
from chatbot.replay.report import junit_xml, text_report, transcript_diff
from chatbot.replay.runner import Replayer
from chatbot.settings import Settings
from chatbot.types import Source
from tests.fakes import FakeAnswerer

ORDER = Source("order", "#NW10822", "Order #NW10822")
TRACKING = "525094231110"  # harper_jackson_8530's FedEx parcel for #NW10822 (demo store)

TRACKING_TRANSCRIPT = """
name: tracking a parcel out for delivery
store: demo
identity: {customer: harper_jackson_8530}
turns:
  - shopper: "Where is my order #NW10822?"
    contains: ["525094231110"]
    cites: ["order #NW10822"]
    handoff: false
    no_unsupported_claims: true
"""


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[InProcessServer, Target, FakeAnswerer]]:
    fake = FakeAnswerer()
    settings = Settings.from_env({"CHATBOT_HOME": str(tmp_path)})
    server = InProcessServer(settings, [StoreFixture("demo")], answerer=fake)
    target = await server.start()
    try:
        yield server, target, fake
    finally:
        await server.stop()


def _replayer(target: Target) -> Replayer:
    return Replayer(target, evidence=DatabaseEvidence(target.db), reply_timeout_s=10,
                    silence_s=0.5)


async def test_correct_reply_passes(served: tuple[InProcessServer, Target, FakeAnswerer]) -> None:
    _, target, fake = served
    fake.queue(["Order #NW10822 is out for delivery with FedEx, ", f"tracking {TRACKING}."],
               sources=[ORDER])
    [t] = loads(TRACKING_TRANSCRIPT, "tracking.yaml")
    result = await _replayer(target).run(t)
    assert result.passed, transcript_diff(result)
    assert result.outcome == "passed"
    # The signed identity reached the answerer as the verified customer.
    assert fake.requests[0].customer_id is not None
    assert fake.requests[0].seed == 0


async def test_broken_reply_fails_with_a_clear_diff(
    served: tuple[InProcessServer, Target, FakeAnswerer], tmp_path: Path
) -> None:
    _, target, fake = served
    # Wrong parcel number, an invented delivery date, and the wrong order cited.
    fake.queue(["Your order was delivered on May 3, 2026, ", "tracking 999999999999."],
               sources=[Source("order", "#NW10943", "Order #NW10943")])
    [t] = loads(TRACKING_TRANSCRIPT, tmp_path / "tracking.yaml")
    result = await _replayer(target).run(t)
    assert not result.passed and result.outcome == "failed"
    diff = transcript_diff(result, all_checks=False)
    assert "turn 1 (line 6)  <-- failed" in diff
    assert "bot:     'Your order was delivered on May 3, 2026, tracking 999999999999.'" in diff
    assert "sources: order #NW10943   handoff: false" in diff
    assert "[FAIL] contains\n        - expected: '525094231110'" in diff
    assert (
        "[FAIL] cites\n        - expected: order #NW10822\n        + actual:   order #NW10943"
    ) in diff
    assert "unsupported: 3, 999999999999 (cited: order #NW10943)" in diff
    assert "[ok  ] handoff" not in diff  # only failures in the failure diff
    report = text_report([result])
    assert report.startswith("FAILED   tracking a parcel out for delivery")
    assert "1 transcripts: 1 failed" in report
    suite = ET.fromstring(junit_xml([result]).split("\n", 1)[1])
    assert suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure is not None and "999999999999" in (failure.text or "")


async def test_xfail_transcript_counts_as_expected_failure(
    served: tuple[InProcessServer, Target, FakeAnswerer],
) -> None:
    _, target, fake = served
    fake.queue(["I have no idea."])
    [t] = loads(TRACKING_TRANSCRIPT + "xfail: the bot cannot read tracking yet\n", "x.yaml")
    result = await _replayer(target).run(t)
    assert result.outcome == "xfailed" and result.ok


async def test_unknown_customer_is_a_setup_error(
    served: tuple[InProcessServer, Target, FakeAnswerer],
) -> None:
    _, target, _ = served
    [t] = loads(TRACKING_TRANSCRIPT.replace("harper_jackson_8530", "nobody_0000"), "x.yaml")
    result = await _replayer(target).run(t)
    assert result.outcome == "failed"
    assert result.error is not None and "nobody_0000" in result.error


CONSOLE_TRANSCRIPT = """
name: tracking, then a person takes over
store: demo
identity: {customer: harper_jackson_8530}
turns:
  - shopper: "Where is my order #NW10822?"
    contains: ["525094231110"]
  - shopper: I want to talk to a human
    handoff: true
  - agent: take_over
  - agent: {send: "Hi Harper, Sam here. Let me check with FedEx."}
  - shopper: thanks, it is a gift so it matters
    no_reply: true
  - agent: hand_back
  - shopper: "what is in order #NW10822?"
    cites: ["order #NW10822"]
"""


async def test_export_of_a_real_conversation_replays_green(
    served: tuple[InProcessServer, Target, FakeAnswerer], tmp_path: Path
) -> None:
    server, target, fake = served
    replies = [
        (["Order #NW10822 is out for delivery with FedEx, ", f"tracking {TRACKING}."],
         {"sources": [ORDER]}),
        (["Of course, connecting you with a person."], {"handoff": True, "reason": "asked_human"}),
        (["It holds a Men's Couloir 3L Ski Shell ($379.00) ", "and Women's Flow Running Sandals."],
         {"sources": [ORDER]}),
    ]
    for tokens, options in replies:
        fake.queue(tokens, **options)
    [t] = loads(CONSOLE_TRANSCRIPT, tmp_path / "console.yaml")
    first = await _replayer(target).run(t)
    assert first.passed, transcript_diff(first)
    assert first.conversation_id is not None

    recording = await asyncio.to_thread(
        export_conversation, server.db, first.conversation_id, path=tmp_path / "exported.yaml"
    )
    text = recording.yaml()
    [exported] = loads(text, tmp_path / "exported.yaml")
    kinds = [getattr(s, "action", "shopper") for s in exported.steps]
    assert kinds == ["shopper", "shopper", "take_over", "send", "shopper", "hand_back", "shopper"]
    assert exported.customer == "harper_jackson_8530" and exported.store.name == "demo"
    pinned = exported.steps[0].expect  # type: ignore[union-attr]
    assert "525094231110" in pinned.contains and "#NW10822" in pinned.contains
    assert [str(c) for c in pinned.cites] == ["order #NW10822"]
    assert pinned.no_unsupported_claims and pinned.handoff is False
    assert exported.steps[1].expect.handoff is True  # type: ignore[union-attr]
    assert exported.steps[4].expect.no_reply  # type: ignore[union-attr]
    assert "$379.00" in exported.steps[6].expect.contains  # type: ignore[union-attr]

    for tokens, options in replies:
        fake.queue(tokens, **options)
    again = await _replayer(target).run(exported)
    assert again.passed, transcript_diff(again)

    # The same transcript fails once the bot states a different parcel number.
    fake.queue(["Order #NW10822 is out for delivery, tracking 525094231119."], sources=[ORDER])
    fake.queue(["Connecting you."], handoff=True, reason="asked_human")
    broken = await _replayer(target).run(exported)
    assert not broken.passed
    assert "unsupported: 525094231119" in transcript_diff(broken)


async def test_cli_replays_against_a_running_server_and_exits_1_on_failure(
    served: tuple[InProcessServer, Target, FakeAnswerer], tmp_path: Path
) -> None:
    server, target, fake = served
    fake.queue(["Your parcel is lost, sorry."], sources=[ORDER])
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "tracking.yaml").write_text(TRACKING_TRANSCRIPT)
    assert server.settings is not None
    cmd = [
        sys.executable, "-m", "chatbot", "--database-url", server.settings.database_url,
        "replay", str(tmp_path / "suite"), "--server", target.url,
        "--junit", str(tmp_path / "out" / "junit.xml"), "--report", str(tmp_path / "report.txt"),
    ]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                   timeout=120)
    assert done.returncode == 1, done.stderr
    assert "[FAIL] contains\n        - expected: '525094231110'" in done.stdout
    assert "Your parcel is lost, sorry." in (tmp_path / "report.txt").read_text()
    assert 'failures="1"' in (tmp_path / "out" / "junit.xml").read_text()


PLUGIN_SUITE = {
    "orders/tracking.yaml": TRACKING_TRANSCRIPT,
    "orders/wrong.yaml": TRACKING_TRANSCRIPT.replace("tracking a parcel", "a wrong parcel"),
    "orders/known-gap.yaml": TRACKING_TRANSCRIPT.replace("tracking a parcel", "a known gap")
    + "xfail: the scripted bot gets this one wrong on purpose\n",
    "broken.yaml": "store: demo\nturns:\n  - shopper: hi\n    contain: [x]\n",
}


async def test_pytest_plugin_collects_transcripts_and_shows_the_diff(
    served: tuple[InProcessServer, Target, FakeAnswerer], tmp_path: Path
) -> None:
    server, target, fake = served
    # Collection order is alphabetical: known-gap, tracking, wrong.
    fake.queue(["Sorry, no idea."])
    fake.queue([f"Order #NW10822: FedEx tracking {TRACKING}."], sources=[ORDER])
    fake.queue(["It was delivered on May 3."], sources=[ORDER])
    root = tmp_path / "project"
    for rel, text in PLUGIN_SUITE.items():
        (root / "tests" / "transcripts" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "tests" / "transcripts" / rel).write_text(text)
    (root / "tests" / "conftest.py").write_text(
        'pytest_plugins = ["chatbot.replay.pytest_plugin"]\n'
    )
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    model: real model\n")
    assert server.settings is not None
    env = {**os.environ, "CHATBOT_DATABASE_URL": server.settings.database_url}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rxX",
           "--replay-server", target.url, "tests"]
    done = await asyncio.to_thread(subprocess.run, cmd, cwd=root, env=env, capture_output=True,
                                   text=True, timeout=180)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "2 failed, 1 passed, 1 xfailed" in out
    assert "broken.yaml: turn 1 (line 3): unknown key 'contain' (did you mean 'contains'?)" in out
    assert "bot:     'It was delivered on May 3.'" in out
    assert "[FAIL] contains\n        - expected: '525094231110'" in out
    assert "XFAIL tests/transcripts/orders/known-gap.yaml::a known gap" in out


def test_pytest_plugin_skips_transcripts_when_the_model_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "tests" / "transcripts").mkdir(parents=True)
    (root / "tests" / "transcripts" / "t.yaml").write_text(TRACKING_TRANSCRIPT)
    (root / "tests" / "conftest.py").write_text(
        'pytest_plugins = ["chatbot.replay.pytest_plugin"]\n'
    )
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    model: real model\n")
    env = {**os.environ, "CHATBOT_HOME": str(tmp_path / "home"),
           "CHATBOT_MODEL": str(tmp_path / "no-model")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "tests"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "the model is not pulled" in done.stdout


async def test_transcripts_export_cli_writes_a_replayable_file(
    served: tuple[InProcessServer, Target, FakeAnswerer], tmp_path: Path
) -> None:
    server, target, fake = served
    fake.queue(["Order #NW10822 is out for delivery, ", f"tracking {TRACKING}."], sources=[ORDER])
    [t] = loads(TRACKING_TRANSCRIPT, tmp_path / "t.yaml")
    first = await _replayer(target).run(t)
    assert first.passed and first.conversation_id
    assert server.settings is not None
    base = [sys.executable, "-m", "chatbot", "--database-url", server.settings.database_url,
            "transcripts", "export"]
    out = tmp_path / "bugs" / "exported.yaml"
    done = await asyncio.to_thread(
        subprocess.run, [*base, "--conversation", first.conversation_id, "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"# Exported from conversation {first.conversation_id}." in out.read_text()
    [exported] = loads(out.read_text(), out)
    fake.queue(["Order #NW10822 is out for delivery, ", f"tracking {TRACKING}."], sources=[ORDER])
    again = await _replayer(target).run(exported)
    assert again.passed, transcript_diff(again)

    missing = await asyncio.to_thread(
        subprocess.run, [*base, "--conversation", "c_nope"], capture_output=True, text=True,
        timeout=120,
    )
    assert missing.returncode == 1
    assert "no conversation 'c_nope'" in missing.stderr
