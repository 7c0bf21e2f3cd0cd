"""The shipped demo store: reproducible from its sources, complete, and self-consistent."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from chatbot.storage.db import Database
from knowledge_base.demo import DEMO_STORE_FILE, ensure_demo_store, generate
from knowledge_base.demo.history import REF, STATUS_COUNTS
from knowledge_base.models import Article, Order, Store


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return json.loads(gzip.decompress(DEMO_STORE_FILE.read_bytes()))


def ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def test_committed_file_matches_its_generator() -> None:
    assert generate.render() == DEMO_STORE_FILE.read_bytes(), (
        "store.json.gz is stale: run python -m knowledge_base.demo.generate"
    )
    assert DEMO_STORE_FILE.stat().st_size < 600_000


def test_catalogue_and_articles(doc: dict[str, Any]) -> None:
    products, articles = doc["products"], doc["articles"]
    assert len(products) >= 150
    skus = [v["sku"] for p in products for v in p["variants"]]
    assert len(skus) == len(set(skus)) and all(re.fullmatch(r"NW-[A-Z0-9]+(-[A-Z0-9]+)*", s)
                                               for s in skus)
    assert sum(1 for p in products if len(p["variants"]) > 1) >= 120
    assert all(len(p["description"]) >= 80 and p["option_names"] for p in products)
    assert any(not v["available"] for p in products for v in p["variants"])
    assert len(articles) >= 60 and len({a["id"] for a in articles}) == len(articles)
    assert Counter(a["kind"] for a in articles).keys() == {"faq", "policy"}
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", a["id"]) for a in articles)
    assert all(len(a["body"].split()) >= 40 for a in articles)
    needed = {"shipping", "returns", "exchanges", "warranty", "payments", "account", "sizing",
              "orders", "gift-cards", "privacy", "stores", "pricing"}
    assert needed <= {a["category"] for a in articles}


def test_customers_and_order_statuses(doc: dict[str, Any]) -> None:
    customers, orders = doc["customers"], doc["orders"]
    assert len(customers) == 300 and len(orders) == 1000
    assert all(re.fullmatch(r"[a-z]+_[a-z]+_\d{4}", c["id"]) for c in customers)
    assert len({c["email"] for c in customers}) == 300
    assert Counter(o["status"] for o in orders) == STATUS_COUNTS
    numbers = [o["number"] for o in orders]
    assert numbers == [f"#NW{n}" for n in range(10001, 11001)]
    placed = [o["placed_at"] for o in orders]
    assert placed == sorted(placed)  # numbers follow time
    by_id = {c["id"]: c for c in customers}
    for order in orders:
        if order["customer"] is not None:
            customer = by_id[order["customer"]]
            assert customer["created_at"] < order["placed_at"]
            assert order["email"] == customer["email"]


def _check_digit_ok(carrier: str, number: str) -> bool:
    """Independent check-digit validation per carrier format."""
    if carrier == "UPS":
        if not re.fullmatch(r"1Z[0-9A-Z]{16}", number):
            return False
        body = number[2:-1]
        values = [int(c) if c.isdigit() else (ord(c) - 63) % 10 for c in body]
        total = sum(values[0::2]) + 2 * sum(values[1::2])
        return (10 - total % 10) % 10 == int(number[-1])
    if carrier == "FedEx":
        if not re.fullmatch(r"\d{12}", number):
            return False
        digits = [int(c) for c in number[:-1]][::-1]
        total = sum(d * (1, 3, 7)[i % 3] for i, d in enumerate(digits))
        return total % 11 % 10 == int(number[-1])
    if carrier == "USPS":
        if not re.fullmatch(r"94001\d{17}", number):
            return False
        digits = [int(c) for c in number[:-1]][::-1]
        total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(digits))
        return (10 - total % 10) % 10 == int(number[-1])
    if carrier == "DHL":
        return bool(re.fullmatch(r"\d{10}", number)) and int(number[:9]) % 7 == int(number[9])
    return False


def test_shipments_have_real_tracking_formats_and_consistent_dates(doc: dict[str, Any]) -> None:
    seen: Counter[str] = Counter()
    for order in doc["orders"]:
        placed = ts(order["placed_at"])
        assert placed is not None and placed <= REF
        status, shipments = order["status"], order["shipments"]
        if status in ("pending", "cancelled"):
            assert shipments == []
        if status in ("delivered", "returned", "refunded", "return requested"):
            assert shipments and all(s["status"] == "delivered" for s in shipments)
        if status == "shipped":
            assert {s["status"] for s in shipments} <= {"in_transit", "exception"}
        if status == "out for delivery":
            assert all(s["status"] == "out_for_delivery" for s in shipments)
            assert all(ts(s["estimated_delivery"]) is not None for s in shipments)
        for s in shipments:
            seen[s["carrier"]] += 1
            assert _check_digit_ok(s["carrier"], s["tracking_number"]), s
            shipped, delivered = ts(s["shipped_at"]), ts(s["delivered_at"])
            if shipped is not None:
                assert placed <= shipped
            if delivered is not None:
                assert shipped is not None and shipped < delivered <= REF
            if s["status"] in ("in_transit", "out_for_delivery", "label_created"):
                assert delivered is None
            if s["status"] == "in_transit":
                assert shipped is not None and shipped <= REF
            if s["status"] == "label_created":
                assert shipped is None
        if order["shipping_address"]["country"] != "USA":
            assert {s["carrier"] for s in shipments} <= {"DHL"}
            assert "fuel-canister-230" not in {i["product"] for i in order["items"]}
    assert set(seen) == {"UPS", "USPS", "FedEx", "DHL"}


def test_money_follows_the_shipping_policy(doc: dict[str, Any]) -> None:
    variants = {v["id"]: v for p in doc["products"] for v in p["variants"]}
    for order in doc["orders"]:
        subtotal = sum(Decimal(str(i["unit_price"])) * i["quantity"] for i in order["items"])
        assert Decimal(str(order["subtotal"])) == subtotal
        shipping = Decimal(str(order["shipping_cost"]))
        assert Decimal(str(order["total"])) == subtotal + shipping
        for item in order["items"]:
            assert variants[item["variant"]]["price"] == item["unit_price"]
        if order["shipping_address"]["country"] != "USA":
            allowed = {"0", "24.95"}
        elif subtotal >= 75:
            allowed = {"0", "9.00", "24.00"}
        else:
            allowed = {"5.95", "14.95", "29.95"}
        assert shipping in {Decimal(a) for a in allowed}, order["number"]
        paid = [p for p in order["payments"] if p["kind"] == "payment"]
        assert len(paid) == 1 and paid[0]["amount"] == order["total"]
        if paid[0]["method"] == "Klarna":
            assert 50 <= order["total"] <= 1000


def test_returns_refunds_and_exchanges(doc: dict[str, Any]) -> None:
    for order in doc["orders"]:
        status = order["status"]
        refunds = [p for p in order["payments"] if p["kind"] == "refund"]
        if status == "cancelled":
            assert [r["amount"] for r in refunds] == [order["total"]]
            continue
        if status not in ("return requested", "returned", "refunded", "exchange requested",
                          "exchanged"):
            assert order["returns"] == [] and refunds == []
            continue
        (ret,) = order["returns"]
        delivered = max(ts(s["delivered_at"]) or REF for s in order["shipments"][:1])
        requested = ts(ret["requested_at"])
        assert requested is not None and delivered < requested <= REF
        assert requested - delivered <= timedelta(days=30)  # the 30-day return window
        ordered = {i["variant"] for i in order["items"]}
        assert set(ret["item_ids"]) <= ordered
        assert ret["kind"] == ("exchange" if status.startswith("exchange") else "return")
        if status == "refunded":
            assert ret["status"] == "refunded"
            assert [r["amount"] for r in refunds] == [ret["refund_amount"]]
        if status == "exchanged":
            # The replacement parcel holds another variant of the exchanged product.
            (old,) = ret["item_ids"]
            (new,) = order["shipments"][-1]["item_ids"]
            assert new != old and new.split("-")[1] == old.split("-")[1]


def test_ensure_demo_store_imports_once(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'demo.db'}")
    try:
        store = ensure_demo_store(db)
        assert (store.name, store.widget_key, store.title) == ("demo", "demo",
                                                               "Northwind Outfitters")
        again = ensure_demo_store(db)
        assert again.id == store.id
        # A database holding an older demo file is brought up to date.
        with db.transaction() as session:
            row = session.get(Store, store.id)
            assert row is not None
            row.settings = {**row.settings, "data_version": "older"}
            article = session.scalars(select(Article).where(
                Article.store_id == store.id, Article.source_id == "return-policy")).one()
            article.body = "stale text"
        ensure_demo_store(db)
        with db.session() as session:
            article = session.scalars(select(Article).where(
                Article.store_id == store.id, Article.source_id == "return-policy")).one()
            assert "30 days of delivery" in article.body
        with db.session() as session:
            row = session.get(Store, store.id)
            assert row is not None and row.allowed_origins == []
            count = session.scalar(select(func.count()).select_from(Order))
            assert count == 1000
    finally:
        db.dispose()
