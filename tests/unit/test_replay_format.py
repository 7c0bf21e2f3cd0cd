"""The transcript loader: valid files load into typed steps; broken ones name file, turn, reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.replay.format import (
    AgentStep,
    Cite,
    ShopperTurn,
    TranscriptError,
    collect_paths,
    load_file,
    loads,
)
from chatbot.replay.writer import dumps

GOOD = """
name: tracking
description: why these checks are true
store: demo
identity: {customer: harper_jackson_8530}
tags: [orders]
turns:
  - shopper: "Where is #NW10822?"
    contains: ["525094231110"]
    contains_any: [FedEx, parcel]
    not_contains: delivered
    regex: ['(?i)out for delivery']
    not_regex: ['\\d{3}-\\d{4}']
    cites: ["order #NW10822", {kind: policy, id: shipping-policy}]
    cites_any: ["faq track-my-order", "policy shipping-policy"]
    not_cites: [product]
    handoff: false
    no_unsupported_claims: true
    max_ttft_ms: 1500
  - agent: take_over
  - agent: {send: "Hi, Sam here"}
  - agent: "send: second message"
  - shopper: thanks
    no_reply: true
  - agent: hand_back
  - agent: resolve
"""


def test_a_full_transcript_loads_into_typed_steps() -> None:
    [t] = loads(GOOD, "suite/tracking.yaml")
    assert (t.name, t.store.name, t.customer, t.tags) == (
        "tracking", "demo", "harper_jackson_8530", ("orders",)
    )
    first = t.steps[0]
    assert isinstance(first, ShopperTurn) and first.text == "Where is #NW10822?"
    e = first.expect
    assert e.contains == ("525094231110",) and e.not_contains == ("delivered",)
    assert e.contains_any == ("FedEx", "parcel")
    assert e.cites == (Cite("order", "#NW10822"), Cite("policy", "shipping-policy"))
    assert e.not_cites == (Cite("product"),)
    assert e.handoff is False and e.no_unsupported_claims and e.max_ttft_ms == 1500
    assert first.line == 8
    assert [s.action for s in t.steps if isinstance(s, AgentStep)] == [
        "take_over", "send", "send", "hand_back", "resolve"
    ]
    assert t.steps[2] == AgentStep("send", "Hi, Sam here", line=21)
    assert t.steps[3].text == "second message"  # type: ignore[union-attr]
    assert t.steps[4].expect.no_reply  # type: ignore[union-attr]
    assert t.has_agent_steps and t.identity == "customer harper_jackson_8530"


def test_cite_matching_ignores_case_and_hash() -> None:
    assert Cite("order", "#NW10822").matches("order", "nw10822")
    assert Cite("order").matches("order", "#NW1")
    assert not Cite("order", "#NW10822").matches("order", "#NW10823")
    assert not Cite("faq").matches("policy", "x")


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("store: demo\nturns:\n  - shopper: hi\n    contain: [x]\n",
         "turn 1 (line 3)", "unknown key 'contain' (did you mean 'contains'?)"),
        ("turns:\n  - shopper: hi\n", "", "'store' is required"),
        ("store: demo\nturns: []\n", "", "'turns' must be a non-empty list"),
        ("store: demo\nturns:\n  - agent: take_over\n", "",
         "a transcript needs at least one 'shopper' turn"),
        ("store: demo\nturns:\n  - shopper: hi\n    regex: ['(']\n", "turn 1 (line 3)",
         "bad regex '('"),
        ("store: demo\nturns:\n  - shopper: hi\n    handoff: yes please\n", "turn 1 (line 3)",
         "'handoff' must be true or false"),
        ("store: demo\nturns:\n  - shopper: hi\n    max_ttft_ms: -5\n", "turn 1 (line 3)",
         "'max_ttft_ms' must be a positive number"),
        ("store: demo\nturns:\n  - shopper: hi\n  - agent: dance\n", "turn 2 (line 4)",
         "'agent' must be take_over, hand_back, resolve or {send: TEXT}"),
        ("store: demo\nturns:\n  - shopper: hi\n    no_reply: true\n    contains: [x]\n",
         "turn 1 (line 3)", "'no_reply' cannot be combined with reply checks"),
        ("store: demo\nidentity: admin\nturns:\n  - shopper: hi\n", "",
         "'identity' must be 'guest' or {customer: ID}"),
        ("store: demo\nturns:\n  - shopper: where is #NW10001?\n", "line 3",
         "' #' starts a YAML comment"),
        ("store: demo\nturns:\n  - shopper: [unclosed\n", "line 4", "not valid YAML"),
        ("store: {name: tau, import: {format: csv, path: x}}\nturns:\n  - shopper: hi\n", "",
         "'store.import.format' must be one of json, tau-retail, shopify-csv"),
        ("store: demo\nxfail: ''\nturns:\n  - shopper: hi\n", "",
         "'xfail' must be a reason"),
    ],
)
def test_broken_transcripts_name_file_turn_and_reason(text: str, where: str, reason: str) -> None:
    with pytest.raises(TranscriptError) as err:
        loads(text, "suite/bad.yaml")
    assert err.value.path == "suite/bad.yaml"
    assert err.value.location == where
    assert reason in err.value.reason
    assert str(err.value).startswith("suite/bad.yaml: ")


def test_several_documents_are_several_transcripts(tmp_path: Path) -> None:
    path = tmp_path / "pair.yaml"
    path.write_text("store: demo\nturns:\n  - shopper: hi\n---\nname: second\nstore: demo\n"
                    "xfail: the bot is wrong\nturns:\n  - shopper: bye\n")
    first, second = load_file(path)
    assert (first.name, second.name) == ("pair[1]", "second")
    assert second.xfail == "the bot is wrong" and second.document == 1


def test_a_named_import_resolves_its_path_next_to_the_transcript(tmp_path: Path) -> None:
    [t] = loads(
        "store: {name: tau, import: {format: tau-retail, path: ../data/tau}}\n"
        "identity: {customer: 1234}\nturns:\n  - shopper: hi\n",
        tmp_path / "suite" / "t.yaml",
    )
    assert t.store.import_format == "tau-retail"
    assert t.store.import_path == (tmp_path / "data" / "tau").resolve()
    assert t.customer == "1234"


def test_dump_then_load_is_the_same_transcript() -> None:
    [t] = loads(GOOD, "x.yaml")
    [again] = loads(dumps([t], header="exported\nfor a test"), "x.yaml")
    assert again.store == t.store and again.customer == t.customer
    strip = [(type(s), getattr(s, "text", ""), getattr(s, "expect", None)) for s in t.steps]
    assert strip == [(type(s), getattr(s, "text", ""), getattr(s, "expect", None))
                     for s in again.steps]
    assert dumps([t], header="exported").startswith("# exported\n")


def test_collect_paths_finds_yaml_recursively_and_refuses_missing(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/one.yaml", "a/b/two.yml", "a/readme.md"):
        (tmp_path / rel).write_text("x")
    found = collect_paths([tmp_path / "a"])
    assert [p.name for p in found] == ["two.yml", "one.yaml"]
    with pytest.raises(TranscriptError, match="no such file or folder"):
        collect_paths([tmp_path / "missing"])


def test_the_shipped_suite_loads_and_is_big_enough() -> None:
    root = Path(__file__).parents[1] / "transcripts"
    transcripts = [t for p in collect_paths([root]) for t in load_file(p)]
    assert len(transcripts) >= 60
    names = [t.name for t in transcripts]
    assert len(set(names)) == len(names), "transcript names must be unique"
    for t in transcripts:
        assert t.description, f"{t.path}: say why the expectations are true"
        if t.xfail:
            assert len(t.xfail) > 20, f"{t.path}: give an honest xfail reason"
