"""The grounding guard: numbers in a reply must come from the facts, checked while streaming."""

from __future__ import annotations

import pytest

from chatbot.answering.guard import (
    SAFE_PHRASE,
    StreamGuard,
    extract_claims,
    find_unsupported,
    normalise_number,
)

FACTS = [
    "[order #W2611340] status: processed; items: Water Bottle (1000ml, glass, blue) x1 $47.84, "
    "Laptop x1 $1,093.34; total $1,141.18; tracking 357962501027 (UPS, in transit, "
    "expected May 3, 2024)",
    "[policy returns] Returns: items can be returned within 30 days.",
]


def stream(guard: StreamGuard, pieces: list[str]) -> str:
    out = "".join(guard.feed(p) for p in pieces)
    return out + guard.finish()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1,093.34", "1093.34"), ("50.00", "50"), ("50", "50"), ("47.80", "47.8"), ("3.", "3")],
)
def test_normalise_number(raw: str, expected: str) -> None:
    assert normalise_number(raw) == expected


def test_claims_from_facts_are_normalised() -> None:
    claims = extract_claims(FACTS[0])
    assert "W2611340" in claims.codes
    assert {"1093.34", "47.84", "357962501027", "1"} <= claims.numbers
    assert (2024, 5, 3) in claims.dates


@pytest.mark.parametrize(
    "reply",
    [
        "Your order #W2611340 is processed.",
        "Order W2611340 has tracking number 357962501027.",
        "The laptop cost 1093.34 dollars and the total was $1141.18.",
        "It should arrive on May 3, 2024.",
        "It should arrive on 2024-05-03.",
        "It should arrive on 05/03/2024.",
        "You can return items within 30 days.",
        "You ordered 1 Water Bottle (1000ml).",
    ],
)
def test_supported_claims_pass(reply: str) -> None:
    assert find_unsupported(reply, FACTS) == []
    guard = StreamGuard(FACTS)
    assert stream(guard, [reply]) == reply
    assert guard.fired == 0


@pytest.mark.parametrize(
    ("reply", "bad"),
    [
        ("Your order #W2611341 is processed.", "#W2611341"),
        ("Your tracking number is 123456789012.", "123456789012"),
        ("The total was $1,200.00 in all.", "$1,200.00"),
        ("It should arrive on May 4, 2024.", "4"),
        ("It should arrive on May 3, 2025.", "2025"),
        ("It should arrive on 2024-06-03.", "2024-06-03"),
        ("You can return items within 60 days.", "60"),
    ],
)
def test_crafted_unsupported_claims_are_caught(reply: str, bad: str) -> None:
    assert find_unsupported(reply, FACTS) == [bad]


def test_unsupported_number_is_replaced_and_rest_of_sentence_cut() -> None:
    guard = StreamGuard(FACTS)
    out = stream(
        guard,
        ["Your ", "tracking ", "number ", "is ", "1234", "5678", "9012 ", "via ", "UPS. ", "Bye."],
    )
    assert "123456789012" not in out and "9012" not in out
    assert out == f"Your tracking number is {SAFE_PHRASE}. Bye."
    assert guard.fired == 1
    assert guard.removed == ["123456789012"]
    assert guard.text == out


def test_claim_at_sentence_end_keeps_punctuation() -> None:
    guard = StreamGuard(FACTS)
    assert stream(guard, ["Total: ", "$99.99.", " Thanks!"]) == f"Total: {SAFE_PHRASE}. Thanks!"
    assert guard.fired == 1


def test_order_number_split_across_tokens_is_held_until_complete() -> None:
    guard = StreamGuard(FACTS)
    assert guard.feed("Order #W26") == "Order"  # the partial number is held back
    assert guard.feed("11340") == ""
    assert guard.feed(" is processed.") == " #W2611340 is"
    assert guard.finish() == " processed."
    assert guard.fired == 0


def test_wrong_order_number_split_across_tokens_never_leaks_a_prefix() -> None:
    guard = StreamGuard(FACTS)
    released = [guard.feed(p) for p in ["Order #W26", "11999", " is", " ready."]]
    released.append(guard.finish())
    assert "#W26" not in "".join(released)
    assert guard.fired == 1


def test_cut_sentence_at_end_of_stream_is_closed() -> None:
    guard = StreamGuard(FACTS)
    assert stream(guard, ["Call ", "555-0100 ", "for ", "help"]) == f"Call {SAFE_PHRASE}."
    assert guard.fired == 1


def test_text_without_numbers_streams_unchanged() -> None:
    guard = StreamGuard([])
    pieces = ["Hello", " there,", " how", " can", " I", " help?"]
    assert stream(guard, pieces) == "Hello there, how can I help?"


def test_leading_and_trailing_whitespace_is_trimmed() -> None:
    guard = StreamGuard([])
    assert stream(guard, ["  ", "\nHi", " there ", "\n"]) == "Hi there"
    assert guard.text == "Hi there"
