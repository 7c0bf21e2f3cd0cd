"""Test helpers for the answering pipeline: a two-store database, a fake engine.

The fake engine replays queued replies (or, by default, restates the first fact line
it was prompted with), so pipeline tests are fast and deterministic; the real model
runs in the ``@pytest.mark.model`` tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from chatbot.settings import Settings
from chatbot.storage.db import Database
from knowledge_base.models import Customer, Order, OrderItem, Payment, Shipment
from knowledge_base.stores import get_or_create_store


class FakeTokenizer:
    """Word-level stand-in for a HF chat tokenizer; remembers the last prompt text."""

    def __init__(self) -> None:
        self.last_text = ""
        self._vocab: dict[str, int] = {}

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> str:
        text = "".join(f"<{m['role']}>\n{m['content']}\n" for m in conversation)
        if kwargs.get("add_generation_prompt"):
            text += "<assistant>\n"
        self.last_text = text
        return text

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self._vocab.setdefault(word, len(self._vocab)) for word in text.split()]


@dataclass
class FakeEngine:
    """Replays queued replies piece by piece; records every request and prompt."""

    queued: list[list[str]] = field(default_factory=list)
    tokenizer: FakeTokenizer = field(default_factory=FakeTokenizer)
    requests: list[Any] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    closed: int = 0  # streams finished or cancelled

    def queue(self, *pieces: str) -> None:
        self.queued.append(list(pieces))

    async def stream(self, request: Any) -> AsyncIterator[str]:
        self.requests.append(request)
        self.prompts.append(self.tokenizer.last_text)
        pieces = self.queued.pop(0) if self.queued else self._restate_first_fact()
        try:
            for piece in pieces:
                yield piece
        finally:
            self.closed += 1

    def _restate_first_fact(self) -> list[str]:
        for line in self.tokenizer.last_text.splitlines():
            if line.startswith("["):
                text = line.split("] ", 1)[1]
                return ["Here ", "is ", "what ", "I ", "found: "] + [w + " " for w in text.split()]
        return ["I ", "don't ", "know."]


@dataclass(frozen=True)
class FakeHit:
    kind: str
    id: str
    title: str
    snippet: str
    score: float
    url: str = ""


@dataclass
class KeywordRetriever:
    """Scores each article by shared words; stands in where the MiniLM index is not needed."""

    articles: dict[int, list[FakeHit]]
    synced: list[int] = field(default_factory=list)

    def sync(self, store_id: int, *, progress: bool = False) -> None:
        self.synced.append(store_id)

    def generation(self, store_id: int) -> int | None:
        return self.synced.count(store_id) or None

    def search(self, store_id: int, query: str, k: int = 5) -> list[FakeHit]:
        words = {w.strip("?.,!").lower() for w in query.split() if len(w) > 3}
        scored = []
        for hit in self.articles.get(store_id, []):
            text = f"{hit.title} {hit.snippet}".lower()
            matched = sum(1 for w in words if w in text) / max(len(words), 1)
            score = 0.3 + 0.7 * matched if matched else 0.0
            scored.append(FakeHit(hit.kind, hit.id, hit.title, hit.snippet, score, hit.url))
        return sorted(scored, key=lambda h: -h.score)[:k]


@dataclass
class World:
    """The seeded database: ids of the two stores and their customers."""

    db: Database
    settings: Settings
    shop: int
    other: int
    alice: int
    bob: int
    nobody: int
    carol: int
    articles: dict[int, list[FakeHit]]


def _order(store_id: int, customer: Customer | None, number: str, status: str, **kw: Any) -> Order:
    order = Order(
        store_id=store_id,
        customer=customer,
        number=number,
        status=status,
        currency="USD",
        email=kw.get("email", ""),
        total=Decimal(kw.get("total", "0")),
        placed_at=kw.get("placed_at"),
    )
    for name, options, price, qty in kw.get("items", []):
        order.items.append(
            OrderItem(name=name, options=options, unit_price=Decimal(price), quantity=qty,
                      variant_source_id=kw.get("variant", ""))
        )
    if kw.get("tracking"):
        order.shipments.append(
            Shipment(carrier="UPS", tracking_number=kw["tracking"], status="in_transit")
        )
    order.payments.append(Payment(kind="payment", amount=order.total, method="card"))
    return order


def seed_world(tmp_path: Path, url: str | None = None) -> World:
    """Two stores; alice and bob shop in ``shop``, carol (alice's email!) in ``other``."""
    db = Database(url or f"sqlite:///{tmp_path / 'answering.db'}")
    settings = Settings.from_env({}, data_dir=tmp_path, adapter_path="none")
    with db.transaction() as s:
        shop = get_or_create_store(s, "shop")
        other = get_or_create_store(s, "other")
        alice = Customer(store_id=shop.id, source_id="alice_1", email="alice@example.com")
        bob = Customer(store_id=shop.id, source_id="bob_2", email="bob@example.com")
        nobody = Customer(store_id=shop.id, source_id="nobody_3", email="nobody@example.com")
        carol = Customer(store_id=other.id, source_id="carol_4", email="alice@example.com")
        s.add_all([alice, bob, nobody, carol])
        s.add_all(
            [
                _order(
                    shop.id,
                    alice,
                    "#W1000001",
                    "processed",
                    total="536.65",
                    items=[
                        ("Water Bottle", {"capacity": "1000ml", "color": "blue"}, "47.84", 1),
                        ("Office Chair", {"color": "black"}, "488.81", 1),
                    ],
                    tracking="357962501027",
                    variant="bottle-1000",
                ),
                _order(
                    shop.id,
                    alice,
                    "#W1000002",
                    "delivered",
                    total="89.99",
                    items=[("Running Shoes", {"size": "9"}, "89.99", 1)],
                    variant="shoes-9",
                    tracking="111122223333",
                    placed_at=datetime(2024, 5, 3),
                ),
                _order(
                    shop.id,
                    bob,
                    "#W2000001",
                    "pending",
                    total="1093.34",
                    items=[("Laptop", {"ram": "16GB"}, "1093.34", 1)],
                    variant="laptop-16",
                ),
                _order(
                    other.id,
                    carol,
                    "#W3000001",
                    "shipped",
                    total="10.00",
                    items=[("Socks", {}, "10.00", 1)],
                    tracking="999988887777",
                ),
            ]
        )
        s.flush()
        ids = (shop.id, other.id, alice.id, bob.id, nobody.id, carol.id)
    articles = {
        ids[0]: [
            FakeHit(
                "policy",
                "returns",
                "Returns",
                "Delivered items can be returned within 30 days for a full refund.",
                0.0,
                "/pages/returns",
            ),
            FakeHit(
                "faq",
                "shipping-time",
                "Shipping time",
                "Standard shipping takes 3-5 business days.",
                0.0,
            ),
        ],
        ids[1]: [FakeHit("faq", "other-secret", "Other store", "Other store secret 4242.", 0.0)],
    }
    return World(db, settings, *ids, articles=articles)


def words(events: Sequence[Any]) -> str:
    """The text of the ReplyTokens in ``events``, joined."""
    return "".join(e.text for e in events if type(e).__name__ == "ReplyToken")
