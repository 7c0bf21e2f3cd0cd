"""Number claims: every number in a reply must come from the facts (streaming and the other
claim checks are in test_claims.py)."""

from __future__ import annotations

import pytest

from chatbot.answering.guard import extract_claims, find_unsupported, normalise_number

FACTS = [
    "[order #W2611340] status: processed; items: Water Bottle (1000ml, glass, blue) x1 $47.84, "
    "Laptop x1 $1,093.34; total $1,141.18; tracking 357962501027 (UPS, in transit, "
    "expected May 3, 2024)",
    "[policy returns] Returns: items can be returned within 30 days.",
]


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
