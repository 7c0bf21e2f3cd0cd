"""The multi-turn eval set and its runner, without a model (issue #16)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from chatbot.evaluation import conversations as C
from chatbot.evaluation.dialogue_report import summarise, write_report
from chatbot.evaluation.dialogues import load_dialogues, load_injections, select
from chatbot.replay.checks import SourceSeen
from chatbot.replay.format import iter_shopper_turns, loads
from chatbot.training.split import is_heldout_customer
from chatbot.types import AnswerRequest

DIALOGUES = load_dialogues()


def test_the_set_has_60_dialogues_of_3_to_6_turns_on_both_stores() -> None:
    assert len(DIALOGUES) >= 60
    per_store = collections.Counter(d.store.name for d in DIALOGUES)
    assert per_store["demo"] >= 25 and per_store["tau"] >= 25, per_store
    for d in DIALOGUES:
        turns = len(list(iter_shopper_turns(d)))
        assert 3 <= turns <= 6, d.name
        assert d.description


def test_demo_dialogues_ask_about_held_out_customers_only() -> None:
    # Their orders never appear in training (chatbot/training/split.py).
    for d in DIALOGUES:
        if d.store.name == "demo" and d.customer:
            assert is_heldout_customer(d.customer), d.name


def test_the_set_covers_what_the_issue_lists() -> None:
    tags = collections.Counter(tag for d in DIALOGUES for tag in d.tags)
    for tag in ("followups", "topic-switch", "yes-no", "stock", "eligibility", "injection",
                "guests", "verification", "shipping", "why"):
        assert tags[tag] >= 2, tag
    assert any(d.customer for d in DIALOGUES if d.store.name == "tau")
    assert any(not d.customer for d in DIALOGUES if d.store.name == "tau")


def test_injection_set_is_separate_and_has_40_cases() -> None:
    names = {d.name for d in DIALOGUES}
    cases = load_injections()
    assert len(cases) >= 40
    assert not names & {c.name for c in cases}


def test_select_by_store_keyword_and_limit() -> None:
    assert {d.store.name for d in select(DIALOGUES, stores=["tau"])} == {"tau"}
    canada = select(DIALOGUES, keyword="canada")
    assert canada and all("canada" in d.name.lower() for d in canada)
    assert len(select(DIALOGUES, stores=["demo"], limit=3)) == 3


def test_repeat_needs_the_same_reply_to_a_different_message() -> None:
    assert C.is_repeat("Pants, $89.", "pants,  $89.", "and the colours?", "how much?")
    assert not C.is_repeat("Pants, $89.", "Pants, $89.", "how much?", "How much? ")
    assert not C.is_repeat("Pants.", None, "hi", None)
    assert not C.is_repeat("", "", "a", "b")


DIALOGUE = """
name: scripted
description: the fake answerer's replies are scripted
store: demo
turns:
  - shopper: "where is #NW1? my email is a@b.c"
    contains: ["shipped"]
    cites: ["order #NW1"]
  - shopper: and the tracking?
    contains: ["123456"]
    not_contains: ["delivered"]
    no_unsupported_claims: true
  - shopper: and the tracking again?
    handoff: false
"""


class _Evidence:
    def lines(self, store: str, sources: Any) -> list[str]:
        return ["order #NW1 status shipped tracking 123456"] if sources else []


async def test_play_carries_history_proven_orders_and_state_and_scores_turns() -> None:
    [t] = loads(DIALOGUE, Path("scripted.yaml"))
    seen: list[AnswerRequest] = []
    replies = [
        C.Answered("It has shipped.", [SourceSeen("order", "#NW1")],
                   verified_orders=frozenset({"#NW1"}), state={"focus": "#NW1", "n": 1}),
        C.Answered("It was delivered, tracking 999999.", [SourceSeen("order", "#NW1")],
                   state={"focus": "#NW1", "n": 2}, guard_fired=1),
        C.Answered("It was delivered, tracking 999999.", [SourceSeen("order", "#NW1")]),
    ]

    async def answer(request: AnswerRequest) -> C.Answered:
        seen.append(request)
        return replies[len(seen) - 1]

    scored = await C.play(t, answer, system="adapter", store_id=7, customer_id=None,
                          evidence=_Evidence())  # type: ignore[arg-type]
    # What the server would send: earlier turns as history, proven orders, the last state.
    assert [len(r.history) for r in seen] == [0, 2, 4]
    assert seen[1].history[0].role == "shopper" and seen[1].history[1].text == "It has shipped."
    assert seen[0].verified_orders == frozenset()
    assert seen[1].verified_orders == seen[2].verified_orders == frozenset({"#NW1"})
    assert seen[0].state is None and seen[1].state == {"focus": "#NW1", "n": 1}
    assert seen[2].state == {"focus": "#NW1", "n": 2}
    assert all(r.store_id == 7 for r in seen)
    first, second, third = scored.turns
    assert first.passed and not first.false_claim
    assert not second.passed and second.false_claim and not second.repeat
    failed = {c["name"] for c in second.failed_checks()}
    assert failed == {"contains", "not_contains", "no_unsupported_claims"}
    assert third.repeat and third.handoff_ok is True

    summary = summarise([scored])
    assert summary["turns"] == 3 and summary["false_claims"] == 1 and summary["repeats"] == 1
    assert summary["per_turn_accuracy"] == round(2 / 3, 4)
    assert summary["guard_fired"] == 1 and summary["handoff_accuracy"] == 1.0


async def test_a_reply_that_says_a_sentence_twice_is_a_repeat() -> None:
    [t] = loads(DIALOGUE, Path("scripted.yaml"))
    twice = "It has shipped with tracking 123456 today. It has shipped with tracking 123456 today."

    async def answer(request: AnswerRequest) -> C.Answered:
        return C.Answered(twice if not request.history else "It has shipped.",
                          [SourceSeen("order", "#NW1")])

    scored = await C.play(t, answer, system="adapter", store_id=7, customer_id=None,
                          evidence=_Evidence())  # type: ignore[arg-type]
    first = scored.turns[0]
    assert first.repeat and not first.passed
    assert {c["name"] for c in first.failed_checks()} == {"no_self_repeat"}
    assert summarise([scored])["repeats"] >= 1


async def test_report_files(tmp_path: Path) -> None:
    [t] = loads(DIALOGUE, Path("scripted.yaml"))

    async def answer(request: AnswerRequest) -> C.Answered:
        return C.Answered("It has shipped, tracking 123456.", [SourceSeen("order", "#NW1")])

    scored = await C.play(t, answer, system="adapter", store_id=1, customer_id=None,
                          evidence=_Evidence())  # type: ignore[arg-type]
    json_path, md_path, md = write_report(tmp_path, {"demo": {"adapter": [scored]}}, {})
    assert json_path.is_file() and md_path.read_text() == md
    assert "| per-turn accuracy | 1.00 |" in md
    assert "| repeats = 0 | 2 | NO |" in md  # turns 2 and 3 repeat the first reply
