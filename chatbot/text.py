"""Text helpers shared by the answering pipeline and the console: a root module.

Shortening, money, order numbers and order item lines read the same in a bot reply, a fact
line, an inbox row and a handoff summary, so they live here, under every package that shows
them (``chatbot.answering`` re-exports them from ``facts`` and ``router``). It imports
nothing of ours: ``chatbot.agents`` uses it without importing ``chatbot.answering``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Protocol

# The default cut of :func:`shorten`: the answering pipeline's longest fact text
# (``chatbot.answering.facts.MAX_FACT_CHARS``).
SHORTEN_CHARS = 300

_CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$"}

# "#W2611340", "W2611340", "#NW10001", "#1042" (a bare number needs the "#" or "order").
ORDER_NUMBER = re.compile(
    r"(?:#\s?([A-Za-z]{0,3}\d{3,10})\b)"
    r"|(?<![\w#])([A-Za-z]{1,3}\d{5,10})\b"
    r"|\border\s+(?:number\s+|no\.?\s+)?(\d{4,10})\b",
    re.IGNORECASE,
)


def shorten(text: str, limit: int = SHORTEN_CHARS) -> str:
    """Collapse whitespace and cut ``text`` at a word boundary to at most ``limit`` chars."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def money(amount: Decimal | float | int | None, currency: str = "USD") -> str:
    """``$1,093.34`` style, with the currency's symbol (or code) in front."""
    value = Decimal(str(amount if amount is not None else 0)).quantize(Decimal("0.01"))
    symbol = _CURRENCY_SYMBOLS.get(currency.upper(), f"{currency.upper()} ")
    return f"{symbol}{value:,.2f}"


def extract_order_numbers(text: str) -> tuple[str, ...]:
    """Order numbers in ``text``, upper-cased, with a leading ``#``, in order of mention."""
    found: list[str] = []
    for match in ORDER_NUMBER.finditer(text):
        raw = next(g for g in match.groups() if g)
        number = "#" + raw.upper()
        if number not in found:
            found.append(number)
    return tuple(found)


class OrderItem(Protocol):
    """The fields of an order item a line shows (``knowledge_base.models.OrderItem``)."""

    @property
    def name(self) -> str: ...
    @property
    def options(self) -> Mapping[str, str]: ...
    @property
    def unit_price(self) -> Decimal: ...
    @property
    def quantity(self) -> int: ...


class OrderLike(Protocol):
    """An order with items (``knowledge_base.models.Order``)."""

    @property
    def currency(self) -> str: ...
    @property
    def items(self) -> Iterable[OrderItem]: ...


def _options(options: Mapping[str, str]) -> str:
    values = [str(v) for v in options.values() if str(v).strip()]
    return f" ({', '.join(values)})" if values else ""


def item_lines(order: OrderLike, *, with_prices: bool = True) -> list[str]:
    """The order's items, one string each, with identical lines merged into a quantity."""
    merged: dict[tuple[str, str, str], list[int]] = {}
    names: dict[tuple[str, str, str], str] = {}
    for item in order.items:
        key = (item.name, _options(item.options), str(item.unit_price))
        merged.setdefault(key, [0])[0] += item.quantity
        names[key] = f"{item.name}{_options(item.options)}"
    lines = []
    for key, (qty,) in merged.items():
        line = f"{names[key]} x{qty}"
        if with_prices:
            line += f" {money(Decimal(key[2]), order.currency)}"
        lines.append(line)
    return lines
