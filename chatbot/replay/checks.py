"""Checking one reply against a turn's expectations, and the store evidence claims are checked on.

``no_unsupported_claims`` asks: does every order number, tracking number, price, quantity
and date in the reply appear in what the reply cites? The evidence is read from the
store's database rows of the cited sources (the whole order, article or product), not
from the prompt the pipeline built, so the check does not trust the code it tests. The
claim parser is the one the grounding guard uses (one definition of "a claim").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import selectinload

from chatbot.answering.guard import find_unsupported
from chatbot.errors import ChatbotError
from chatbot.replay.format import Cite, Expectations

if TYPE_CHECKING:
    from chatbot.storage.db import Database
    from knowledge_base.models import Order, Product


@dataclass(frozen=True)
class SourceSeen:
    """A source a reply's ``done`` event listed."""

    kind: str
    id: str
    title: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


@dataclass
class Reply:
    """What the bot did in answer to one shopper message."""

    text: str = ""
    sources: list[SourceSeen] = field(default_factory=list)
    handoff: bool = False
    interrupted: bool = False
    ttft_ms: float | None = None
    total_ms: float | None = None
    # ``code: message`` of an error event about this message, if the server sent one.
    error: str | None = None
    # True when no reply arrived (expected for ``no_reply``; a timeout otherwise).
    silent: bool = False


@dataclass(frozen=True)
class Check:
    """One expectation's outcome: what was expected, what was seen."""

    name: str
    expected: str
    actual: str
    passed: bool


class Evidence(Protocol):
    """Where ``no_unsupported_claims`` reads the text of cited sources."""

    def lines(self, store: str, sources: Sequence[SourceSeen]) -> list[str]: ...


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _quote(text: str, limit: int = 400) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def _cited(cite: Cite, sources: Sequence[SourceSeen]) -> bool:
    return any(cite.matches(s.kind, s.id) for s in sources)


def check_reply(
    expect: Expectations,
    reply: Reply,
    *,
    store: str,
    evidence: Evidence | None,
    shopper_texts: Sequence[str] = (),
) -> list[Check]:
    """Every expectation of a turn, checked against ``reply`` (passed and failed)."""
    checks: list[Check] = []
    if expect.no_reply:
        said = "silent" if reply.silent else f"replied {_quote(reply.text)}"
        return [Check("no_reply", "the bot stays silent", said, reply.silent)]
    if reply.silent or reply.error:
        seen = reply.error or "no reply before the timeout"
        checks.append(Check("reply", "a complete reply", seen, False))
    elif reply.interrupted:
        checks.append(Check("reply", "a complete reply", "interrupted reply", False))
    text = _norm(reply.text)
    actual = _quote(reply.text)
    for needle in expect.contains:
        checks.append(Check("contains", repr(needle), actual, _norm(needle) in text))
    if expect.contains_any:
        hit = any(_norm(n) in text for n in expect.contains_any)
        wanted = "one of " + ", ".join(repr(n) for n in expect.contains_any)
        checks.append(Check("contains_any", wanted, actual, hit))
    for needle in expect.not_contains:
        checks.append(Check("not_contains", f"no {needle!r}", actual, _norm(needle) not in text))
    for pattern in expect.regex:
        found = re.search(pattern, reply.text) is not None
        checks.append(Check("regex", f"/{pattern}/", actual, found))
    for pattern in expect.not_regex:
        found = re.search(pattern, reply.text) is not None
        checks.append(Check("not_regex", f"no match for /{pattern}/", actual, not found))
    cited = ", ".join(str(s) for s in reply.sources) or "(no sources)"
    for cite in expect.cites:
        checks.append(Check("cites", str(cite), cited, _cited(cite, reply.sources)))
    if expect.cites_any:
        wanted = "one of " + ", ".join(str(c) for c in expect.cites_any)
        hit = any(_cited(c, reply.sources) for c in expect.cites_any)
        checks.append(Check("cites_any", wanted, cited, hit))
    for cite in expect.not_cites:
        checks.append(Check("not_cites", f"not {cite}", cited, not _cited(cite, reply.sources)))
    if expect.handoff is not None:
        checks.append(
            Check("handoff", str(expect.handoff).lower(), str(reply.handoff).lower(),
                  reply.handoff == expect.handoff)
        )
    if expect.max_ttft_ms is not None:
        ttft = reply.ttft_ms
        seen = f"{ttft:.0f} ms" if ttft is not None else "no token"
        ok = ttft is not None and ttft <= expect.max_ttft_ms
        checks.append(Check("max_ttft_ms", f"<= {expect.max_ttft_ms:.0f} ms", seen, ok))
    if expect.no_unsupported_claims:
        checks.append(_claims_check(reply, store, evidence, shopper_texts))
    if reply.text.strip():
        said_twice = repeated_sentence(reply.text)
        checks.append(Check("no_self_repeat", "no sentence said twice in one reply",
                            f"said twice: {_quote(said_twice)}" if said_twice else actual,
                            said_twice is None))
    return checks


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9$#%']+")
SELF_REPEAT_MIN_WORDS = 5


def repeated_sentence(text: str) -> str | None:
    """A sentence of ``text`` whose words (at least five, in order) another sentence of the
    same text already holds, or None: "Items must be unused: a, b and c. A, b and c." says
    its list twice. Checked on every reply, whatever the turn expects."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    words = [" ".join(_WORD.findall(s.lower())) for s in sentences]
    for i, short in enumerate(words):
        if len(short.split()) < SELF_REPEAT_MIN_WORDS:
            continue
        for j, other in enumerate(words):
            if i != j and f" {short} " in f" {other} " and (len(other) > len(short) or j < i):
                return sentences[i]
    return None


def _claims_check(
    reply: Reply, store: str, evidence: Evidence | None, shopper_texts: Sequence[str]
) -> Check:
    name, wanted = "no_unsupported_claims", "every claim backed by a cited source"
    if evidence is None:
        return Check(name, wanted, "cannot check: no database to read the sources from", False)
    try:
        lines = evidence.lines(store, reply.sources)
    except (ChatbotError, SQLAlchemyError) as exc:
        return Check(name, wanted, f"cannot check: reading the sources failed ({exc})", False)
    # What the shopper wrote is no claim of the bot's ("I can't find #NW99999").
    bad = find_unsupported(reply.text, [*lines, *shopper_texts])
    if not bad:
        return Check(name, wanted, "all claims backed", True)
    cited = ", ".join(str(s) for s in reply.sources) or "no sources"
    return Check(name, wanted, f"unsupported: {', '.join(bad)} (cited: {cited})", False)


# ---- evidence from the database ---------------------------------------------------------------


def _day(when: datetime | None) -> str:
    if when is None:
        return ""
    return f"{when:%Y-%m-%d} ({when:%B} {when.day}, {when.year})"


def _money(value: Decimal | None) -> str:
    return "" if value is None else f"{Decimal(value):.2f}"


def order_lines(order: Order) -> list[str]:
    """Everything the store knows about one order, as plain lines."""
    lines = [
        f"order {order.number} status {order.status} placed {_day(order.placed_at)}",
        f"subtotal {_money(order.subtotal)} shipping {_money(order.shipping_cost)} "
        f"total {_money(order.total)} {order.currency}",
    ]
    for item in order.items:
        options = ", ".join(str(v) for v in (item.options or {}).values())
        lines.append(f"item {item.name} ({options}) x{item.quantity} {_money(item.unit_price)}")
    for ship in order.shipments:
        lines.append(
            f"shipment {ship.carrier} tracking {ship.tracking_number} {ship.status} "
            f"shipped {_day(ship.shipped_at)} expected {_day(ship.estimated_delivery)} "
            f"delivered {_day(ship.delivered_at)}"
        )
    for pay in order.payments:
        lines.append(f"{pay.kind} {_money(pay.amount)} {pay.method} {_day(pay.created_at)}")
    for ret in order.returns:
        lines.append(
            f"{ret.kind} {ret.status} refund {_money(ret.refund_amount)} "
            f"requested {_day(ret.requested_at)}"
        )
    if order.shipping_address:
        lines.append("ship to " + ", ".join(str(v) for v in order.shipping_address.values()))
    return lines


def product_lines(product: Product) -> list[str]:
    """A product and every variant: ids, options, SKU, price, stock."""
    lines = [f"product {product.title} (id {product.source_id}): {product.description}"]
    for v in product.variants:
        options = ", ".join(str(x) for x in (v.options or {}).values())
        lines.append(
            f"variant {v.title} ({options}) id {v.source_id} sku {v.sku} price {_money(v.price)} "
            f"was {_money(v.compare_at_price)} inventory {v.inventory}"
        )
    # Counts derived from the rows ("2 of 3 variants in stock") are facts too.
    variants = list(product.variants)
    in_stock = sum(1 for v in variants
                   if v.available and (v.inventory is None or v.inventory > 0))
    lines.append(f"stock {in_stock} of {len(variants)} variants in stock, "
                 f"{len(variants) - in_stock} sold out")
    return lines


class DatabaseEvidence:
    """Reads cited sources from the store's database rows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def lines(self, store: str, sources: Sequence[SourceSeen]) -> list[str]:
        from knowledge_base.models import Article, Order, Product, Shipment
        from knowledge_base.stores import find_store

        out: list[str] = []
        with self.db.session() as session:
            found = find_store(session, store)
            if found is None:
                raise ChatbotError(f"store {store!r} is not in the database", code="not_found")
            sid = found.id
            for source in sources:
                if source.kind == "order":
                    orders = session.scalars(
                        select(Order)
                        .where(Order.store_id == sid, func.lower(Order.number).in_(
                            _number_forms(source.id)))
                    ).all()
                    for order in orders:
                        out += order_lines(order)
                elif source.kind in ("faq", "policy"):
                    for article in session.scalars(
                        select(Article).where(
                            Article.store_id == sid, Article.source_id == source.id
                        )
                    ):
                        out += [article.title, article.body]
                elif source.kind == "product":
                    for product in session.scalars(
                        select(Product)
                        .where(Product.store_id == sid, Product.source_id == source.id)
                        .options(selectinload(Product.variants))
                    ):
                        out += product_lines(product)
                elif source.kind == "shipment":
                    for ship in session.scalars(
                        select(Shipment).where(Shipment.tracking_number == source.id)
                    ):
                        if ship.order.store_id == sid:
                            out += order_lines(ship.order)
        return out


def _number_forms(number: str) -> list[str]:
    bare = number.strip().lstrip("#").lower()
    return [bare, f"#{bare}"]


def supported_pins(reply_text: str, lines: Iterable[str]) -> list[str]:
    """Claims in ``reply_text`` (order numbers, tracking numbers, prices, dates as written)
    that the evidence backs: what an exported transcript pins with ``contains``."""
    evidence = list(lines)
    pins: list[str] = []
    for word in reply_text.split():
        core = word.strip(".,;:!?)(\"'[]")
        if not any(ch.isdigit() for ch in core) or len(re.sub(r"\D", "", core)) < 2:
            continue
        if find_unsupported(core, evidence):
            continue
        if core not in pins:
            pins.append(core)
    return pins
