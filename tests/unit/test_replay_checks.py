"""Reply checks and reports: each expectation passes and fails on the right replies."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from chatbot.replay.checks import (
    Check,
    Reply,
    SourceSeen,
    check_reply,
    order_lines,
    supported_pins,
)
from chatbot.replay.format import Cite, Expectations, ShopperTurn, StoreFixture, Transcript
from chatbot.replay.report import junit_xml, text_report, transcript_diff
from chatbot.replay.runner import StepResult, TranscriptResult
from knowledge_base.models import Order, OrderItem, Shipment

ORDER_LINES = [
    "order #NW10822 status out for delivery placed 2026-10-23 (October 23, 2026)",
    "item Men's Couloir 3L Ski Shell (Glacier Blue, M) x1 379.00",
    "shipment FedEx tracking 525094231110 out_for_delivery expected 2026-11-04 (November 4, 2026)",
]


class ListEvidence:
    """Evidence from fixed lines per cited source (the database version is integration-tested)."""

    def __init__(self, by_source: dict[str, list[str]]) -> None:
        self.by_source = by_source

    def lines(self, store: str, sources: Sequence[SourceSeen]) -> list[str]:
        return [line for s in sources for line in self.by_source.get(f"{s.kind} {s.id}", [])]


EVIDENCE = ListEvidence({"order #NW10822": ORDER_LINES})
CITED = [SourceSeen("order", "#NW10822", "Order #NW10822")]


def _failed(checks: list[Check]) -> list[str]:
    return [c.name for c in checks if not c.passed]


def _check(expect: Expectations, reply: Reply, shopper: Sequence[str] = ()) -> list[Check]:
    return check_reply(expect, reply, store="demo", evidence=EVIDENCE, shopper_texts=shopper)


def test_a_grounded_reply_passes_every_check() -> None:
    reply = Reply("Your order #NW10822 is out for delivery with FedEx, tracking 525094231110, "
                  "expected November 4.", CITED, ttft_ms=420.0)
    expect = Expectations(
        contains=("525094231110", "OUT FOR  delivery"),
        contains_any=("UPS", "FedEx"),
        not_contains=("delivered on",),
        regex=(r"#NW\d+",),
        not_regex=(r"(?i)sorry",),
        cites=(Cite("order", "NW10822"),),
        cites_any=(Cite("faq"), Cite("order")),
        not_cites=(Cite("order", "#NW10943"),),
        handoff=False,
        no_unsupported_claims=True,
        max_ttft_ms=1000,
    )
    checks = _check(expect, reply)
    assert _failed(checks) == []
    assert len(checks) == 13  # two contains, one check per other key, no_self_repeat


def test_each_expectation_fails_on_a_wrong_reply() -> None:
    reply = Reply("Sorry, order #NW10943 was delivered on May 2 with tracking 111222333444.",
                  [SourceSeen("order", "#NW10943")], handoff=True, ttft_ms=2500.0)
    expect = Expectations(
        contains=("525094231110",),
        contains_any=("out for delivery", "on its way"),
        not_contains=("delivered on",),
        regex=(r"NW10822",),
        not_regex=(r"(?i)sorry",),
        cites=(Cite("order", "#NW10822"),),
        cites_any=(Cite("faq"), Cite("policy")),
        not_cites=(Cite("order", "#NW10943"),),
        handoff=False,
        no_unsupported_claims=True,
        max_ttft_ms=1000,
    )
    checks = {c.name: c for c in _check(expect, reply)}
    assert [n for n, c in checks.items() if not c.passed] == [
        "contains", "contains_any", "not_contains", "regex", "not_regex", "cites", "cites_any",
        "not_cites", "handoff", "max_ttft_ms", "no_unsupported_claims",
    ]
    claims = checks["no_unsupported_claims"]
    assert claims.actual.startswith("unsupported: #NW10943, 2, 111222333444")
    assert checks["handoff"].expected == "false" and checks["handoff"].actual == "true"
    assert checks["max_ttft_ms"].actual == "2500 ms"


def test_every_reply_is_checked_for_a_sentence_said_twice() -> None:
    twice = Reply("Items must be unused: clothing unwashed and unworn with the tags attached. "
                  "Clothing unwashed and unworn with the tags attached.")
    checks = _check(Expectations(), twice)
    assert _failed(checks) == ["no_self_repeat"]
    assert "said twice: 'Clothing unwashed" in checks[0].actual
    again = Reply("We ship to Canada with DHL. Anything else? We ship to Canada with DHL!")
    assert _failed(_check(Expectations(), again)) == ["no_self_repeat"]
    # Short sentences and sentences that only share words are no repeat.
    fine = Reply("Yes. Yes. Standard shipping costs $5.95. Expedited shipping costs $14.95.")
    assert _failed(_check(Expectations(), fine)) == []
    assert "no_self_repeat" not in {c.name for c in _check(Expectations(), Reply(silent=True))}


def test_claims_the_shopper_made_are_not_the_bots() -> None:
    reply = Reply("I can't find order #NW99999 on your account.")
    expect = Expectations(no_unsupported_claims=True)
    assert _failed(_check(expect, reply)) == ["no_unsupported_claims"]
    assert _failed(_check(expect, reply, ["where is #NW99999?"])) == []


def test_no_database_means_the_claims_check_cannot_pass() -> None:
    checks = check_reply(Expectations(no_unsupported_claims=True), Reply("ok", CITED),
                         store="demo", evidence=None)
    assert not checks[0].passed and "cannot check" in checks[0].actual


def test_no_reply_passes_only_when_the_bot_is_silent() -> None:
    expect = Expectations(no_reply=True)
    assert _failed(_check(expect, Reply(silent=True))) == []
    spoke = _check(expect, Reply("Hello!"))
    assert _failed(spoke) == ["no_reply"] and "Hello!" in spoke[0].actual


def test_timeouts_errors_and_interrupted_replies_fail() -> None:
    expect = Expectations()
    assert _failed(_check(expect, Reply(silent=True, error="no reply within 5s"))) == ["reply"]
    assert _failed(_check(expect, Reply(error="rate_limited: slow down"))) == ["reply"]
    assert _failed(_check(expect, Reply("Half a", interrupted=True))) == ["reply"]


def test_order_lines_carry_every_fact_of_an_order() -> None:
    order = Order(number="#NW10822", status="out for delivery", currency="USD",
                  placed_at=datetime(2026, 10, 23), subtotal=Decimal("448"),
                  shipping_cost=Decimal("0"), total=Decimal("448"), shipping_address={})
    order.items = [OrderItem(name="Men's Couloir 3L Ski Shell", options={"Size": "M"},
                             quantity=1, unit_price=Decimal("379"))]
    order.shipments = [Shipment(carrier="FedEx", tracking_number="525094231110",
                                status="out_for_delivery",
                                estimated_delivery=datetime(2026, 11, 4))]
    order.payments, order.returns = [], []
    text = "\n".join(order_lines(order))
    for fact in ("#NW10822", "448.00", "379.00", "x1", "525094231110", "November 4, 2026"):
        assert fact in text


def test_supported_pins_are_the_backed_claims_as_written() -> None:
    reply = "Order #NW10822 ships with FedEx, tracking 525094231110, $379.00, and 99 more."
    assert supported_pins(reply, ORDER_LINES) == ["#NW10822", "525094231110", "$379.00"]


def _result(passed: bool) -> TranscriptResult:
    turn = ShopperTurn("Where is #NW10822?", Expectations(contains=("525094231110",)), line=7)
    t = Transcript("tracking", Path("tests/transcripts/orders/t.yaml"), StoreFixture("demo"),
                   (turn,), customer="harper_jackson_8530", line=1)
    reply = Reply("It is on its way." if not passed else "Tracking 525094231110.", CITED,
                  ttft_ms=300, total_ms=900)
    checks = _check(turn.expect, reply)
    return TranscriptResult(t, [StepResult(0, turn, checks, reply)], "c_1", 1.5)


def test_reports_show_the_diff_of_a_failure() -> None:
    failed, passed = _result(False), _result(True)
    diff = transcript_diff(failed, all_checks=False)
    assert "turn 1 (line 7)  <-- failed" in diff
    assert "bot:     'It is on its way.'  (first token 300 ms, done 900 ms)" in diff
    assert "sources: order #NW10822   handoff: false" in diff
    assert "- expected: '525094231110'\n        + actual:   'It is on its way.'" in diff
    report = text_report([failed, passed])
    assert "FAILED   tracking  [1.5s]" in report and "PASSED   tracking  [1.5s]" in report
    assert report.rstrip().endswith("2 transcripts: 1 passed, 1 failed (3.0s of replay)")
    suite = ET.fromstring(junit_xml([failed, passed]).split("\n", 1)[1])
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = suite.findall("testcase")
    assert cases[0].get("classname") == "transcripts.orders.t"
    assert cases[0].find("failure") is not None and cases[1].find("failure") is None


def test_xfail_is_an_expected_failure_not_a_failure() -> None:
    result = _result(False)
    result.transcript = Transcript(**{**result.transcript.__dict__, "xfail": "known gap"})
    assert result.outcome == "xfailed" and result.ok
    assert "xfail: known gap" in junit_xml([result])
