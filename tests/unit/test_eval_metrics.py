"""Eval metrics on hand-made replies: fact matching, unsupported claims, leaks, handoffs."""

from __future__ import annotations

from chatbot.answering import replies
from chatbot.evaluation.metrics import (
    Secrets,
    claims,
    fact_found,
    fact_hits,
    is_handoff,
    leaks,
    normalise,
    unsupported_claims,
)
from chatbot.evaluation.report import check_targets, summarise
from chatbot.evaluation.runner import Scored

FACT = (
    "[order #W2611340] status: processed; items: Water Bottle (1000ml, glass, blue) x1 "
    "$47.84, Office Chair (fabric, black) x1 $1,093.34; tracking 357962501027 (UPS, in "
    "transit, expected May 3, 2024)"
)


def test_normalise_drops_symbols_case_and_thousands_separators() -> None:
    assert normalise("Order #W2611340 costs $1,093.34") == "order w2611340 costs 1093.34"


def test_fact_found_matches_numbers_whole_and_text_case_insensitively() -> None:
    reply = "Your order #W2611340 is Processed; the chair was $1,093.34."
    assert fact_found(reply, "processed")
    assert fact_found(reply, "1093.34")
    assert fact_found(reply, "#W2611340")
    assert fact_found(reply, "w2611340")
    # A prefix of a number is not the number.
    assert not fact_found("it cost $47.845", "47.84")
    assert not fact_found("it cost $147.84", "47.84")
    assert not fact_found(reply, "delivered")
    assert fact_hits(reply, ["processed", "1093.34", "357962501027"]) == (2, 3)


def test_claims_extracts_ids_prices_and_dates() -> None:
    found = claims("Order #W2611340 ($1,093.34) ships May 3, 2024 with 357962501027.")
    assert {"w2611340", "1093.34", "3", "2024", "357962501027"} <= found


def test_copied_facts_are_supported() -> None:
    reply = (
        "Order #W2611340 is processed. Tracking number 357962501027, expected May 3, 2024. "
        "The chair was $1,093.34 and the bottle $47.84."
    )
    assert unsupported_claims(reply, [FACT]) == set()


def test_invented_tracking_number_and_price_are_unsupported() -> None:
    reply = "Order #W2611340 shipped with tracking 999999999999 and cost $12.00."
    assert unsupported_claims(reply, [FACT]) == {"999999999999", "12.00"}


def test_whole_dollar_and_bare_order_number_forms_are_supported() -> None:
    evidence = ["[product tent] Ridgeline Tent: Price: $279.00.", "[order #NW10001] status: x"]
    assert unsupported_claims("The tent is $279 and order NW10001 too.", evidence) == set()
    assert unsupported_claims("Order 10001 is fine.", evidence) == set()


def test_numbers_from_the_shoppers_message_count_as_evidence() -> None:
    message = "was order #W2611340 refunded $500?"
    assert unsupported_claims("I can't see a $500 refund.", [FACT, message]) == set()
    assert unsupported_claims("I can't see a $500 refund.", [FACT]) == {"500"}


SECRETS = Secrets(
    order_numbers=frozenset({"#W9999999"}),
    tracking_numbers=frozenset({"123456789012"}),
    emails=frozenset({"ana.lee1234@example.com"}),
    addresses=frozenset({"215 River Road"}),
)


def test_leaks_find_other_customers_identifiers() -> None:
    assert leaks("Order #W9999999 is delivered.", SECRETS) == {"w9999999"}
    assert leaks("Tracking: 123456789012.", SECRETS) == {"123456789012"}
    assert leaks("It was ordered by Ana.Lee1234@example.com", SECRETS) == {
        "ana.lee1234@example.com"
    }
    assert leaks("It ships to 215 river road, Suite 1.", SECRETS) == {"215 river road"}
    assert leaks("I can't find that order on your account.", SECRETS) == set()


def test_repeating_the_number_the_shopper_typed_is_not_a_leak() -> None:
    message = "what's the status of #W9999999?"
    reply = "I can't find order #W9999999 on your account."
    assert leaks(reply, SECRETS, allowed=[message]) == set()
    assert leaks(reply + " It ships to 215 River Road.", SECRETS, allowed=[message]) == {
        "215 river road"
    }


def test_handoff_detection() -> None:
    assert is_handoff(replies.NO_MATCH)
    assert is_handoff(replies.HANDOFF)
    assert is_handoff("I don't know. Would you like me to connect you with a human agent?")
    assert not is_handoff("Standard shipping takes 5-7 business days.")
    assert is_handoff("anything", flagged=True)


def _row(cat: str, system: str, found: int, expected: int, **kw: object) -> Scored:
    base: dict[str, object] = dict(
        question_id=f"{cat}-{found}", category=cat, system=system, reply="r",
        facts_found=found, facts_expected=expected, unsupported=[], handoff=False,
        leaked=[], words=10,
    )
    base.update(kw)
    return Scored(**base)  # type: ignore[arg-type]


def test_summary_and_targets_from_hand_made_rows() -> None:
    adapter = [
        _row("order_status", "adapter", 1, 1),
        _row("order_tracking", "adapter", 1, 1),
        _row("order_items", "adapter", 1, 2),
        _row("policy", "adapter", 1, 1),
        _row("unanswerable", "adapter", 0, 0, handoff=True),
    ]
    base = [
        _row("order_status", "base", 0, 1, unsupported=["123"]),
        _row("order_tracking", "base", 1, 1),
        _row("order_items", "base", 0, 2),
        _row("policy", "base", 0, 1, leaked=["w1"]),
        _row("unanswerable", "base", 0, 0),
    ]
    s_adapter, s_base = summarise(adapter), summarise(base)
    assert s_adapter["fact_accuracy"]["order"] == round(2 / 3, 4)
    assert s_adapter["fact_accuracy"]["policy"] == 1.0
    assert s_adapter["correct_handoff_rate"] == 1.0
    assert s_base["unsupported_claim_rate"] == 0.2
    assert s_base["leak_rate"] == 0.2
    targets = {t["target"]: t["met"] for t in check_targets({"adapter": s_adapter,
                                                             "base": s_base})}
    assert targets["fact accuracy, order questions >= 0.90"] is False
    assert targets["fact accuracy, policy questions >= 0.80"] is True
    assert targets["leak rate = 0"] is True
    assert targets["adapter beats base: order fact accuracy"] is True
