"""Number claims: every number in a reply must come from the facts the model saw.

Order numbers, tracking numbers, prices, quantities and dates are the claims a small
model gets wrong most dangerously. This module finds and normalises them; the claim
guard (:mod:`chatbot.answering.claims`) runs :func:`find_unsupported` on every reply
sentence before it is shown, with the other checks.

Matching is on normalised values: ``$1,093.34`` == ``1093.34``, ``$50`` == ``50.00``,
``#W2611340`` == ``W2611340``, ``2024-05-03`` == ``May 3, 2024`` == ``05/03/2024``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

_MONTHS = {
    name: i
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}

# An order-number-like code: up to three letters glued to 4+ digits (W2611340, NW10001).
_CODE = re.compile(r"(?<![A-Za-z])([A-Za-z]{1,3})(\d{4,})(?!\d)")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_SLASH_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_MONTH_DAY = re.compile(r"\b([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?\b(?:,?\s+(\d{4}))?")
_DAY_MONTH = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]{3,9})\b(?:,?\s+(\d{4}))?")
_TRAILING = ".,;:!?)\"']"


def normalise_number(raw: str) -> str | None:
    """``1,093.340`` -> ``1093.34``; ``50.00`` -> ``50``; ``None`` when not a number."""
    cleaned = raw.replace(",", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _date(year: int | None, month: int, day: int) -> tuple[int | None, int, int] | None:
    try:
        date(year or 2000, month, day)
    except ValueError:
        return None
    return (year, month, day)


@dataclass
class Claims:
    """Normalised claim values found in a text."""

    codes: set[str] = field(default_factory=set)  # "W2611340"
    numbers: set[str] = field(default_factory=set)  # "1093.34", "357962501027", "3"
    dates: set[tuple[int | None, int, int]] = field(default_factory=set)  # (2024, 5, 3)

    def supports_date(self, when: tuple[int | None, int, int]) -> bool:
        year, month, day = when
        if year is None:
            return any(d[1:] == (month, day) for d in self.dates)
        return when in self.dates or (None, month, day) in self.dates


def extract_claims(text: str) -> Claims:
    """Every order code, number and date in ``text``, normalised."""
    claims = Claims()
    for match in _CODE.finditer(text):
        claims.codes.add((match.group(1) + match.group(2)).upper())
    for match in _NUMBER.finditer(text):
        value = normalise_number(match.group(0))
        if value is not None:
            claims.numbers.add(value)
            # A code's digits alone ("2611340") are not a claim of their own.
    for y, m, d in _ISO_DATE.findall(text):
        if (when := _date(int(y), int(m), int(d))) is not None:
            claims.dates.add(when)
    for m, d, y in _SLASH_DATE.findall(text):
        if (when := _date(int(y), int(m), int(d))) is not None:
            claims.dates.add(when)
    for name, d, y in _MONTH_DAY.findall(text):
        month = _MONTHS.get(name.lower())
        if month and (when := _date(int(y) if y else None, month, int(d))) is not None:
            claims.dates.add(when)
    for d, name, y in _DAY_MONTH.findall(text):
        month = _MONTHS.get(name.lower())
        if month and (when := _date(int(y) if y else None, month, int(d))) is not None:
            claims.dates.add(when)
    return claims


def word_is_supported(word: str, supported: Claims, previous_word: str = "") -> bool:
    """Whether every claim inside one reply word is backed by ``supported``.

    ``previous_word`` lets a day number after a month name ("May 3,") be checked as a date.
    """
    core = word.strip(_TRAILING + "(\"'[")
    if not any(ch.isdigit() for ch in core):
        return True
    for y, m, d in _ISO_DATE.findall(core):
        when = _date(int(y), int(m), int(d))
        return when is not None and supported.supports_date(when)
    for m, d, y in _SLASH_DATE.findall(core):
        when = _date(int(y), int(m), int(d))
        return when is not None and supported.supports_date(when)
    month = _MONTHS.get(previous_word.strip(_TRAILING).lower())
    day_match = re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?", core)
    if month and day_match:
        when = _date(None, month, int(day_match.group(1)))
        return when is not None and supported.supports_date(when)
    rest = core
    for match in _CODE.finditer(core):
        if (match.group(1) + match.group(2)).upper() not in supported.codes:
            return False
        rest = rest.replace(match.group(0), " ")
    for match in _NUMBER.finditer(rest):
        value = normalise_number(match.group(0))
        if value is not None and value not in supported.numbers:
            return False
    return True


def find_unsupported(reply: str, facts: Iterable[str]) -> list[str]:
    """The words of a finished ``reply`` that carry a claim not found in ``facts``."""
    supported = extract_claims("\n".join(facts))
    bad = []
    previous = ""
    for word in reply.split():
        if not word_is_supported(word, supported, previous):
            bad.append(word.strip(_TRAILING))
        previous = word
    return bad
