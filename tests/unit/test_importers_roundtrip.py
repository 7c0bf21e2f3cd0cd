"""Property: any valid store document survives import then export unchanged; re-import: no-op."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.storage.db import Database
from knowledge_base.importers import import_path
from knowledge_base.importers.json_format import export_store
from knowledge_base.stores import get_store

_names = itertools.count()

text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40).map(str.strip)
# A return's status is at most 30 characters in the format (json_format, returns.status).
short = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).map(str.strip)
ident = st.from_regex(r"[a-z][a-z0-9_-]{0,11}", fullmatch=True)
money = st.decimals(min_value=Decimal("0"), max_value=Decimal("99999999.99"), places=2,
                    allow_nan=False, allow_infinity=False).map(float)
stamp = st.one_of(st.none(), st.datetimes(min_value=datetime(2000, 1, 1),
                                          max_value=datetime(2099, 1, 1))
                  .map(lambda d: d.replace(microsecond=0).isoformat()))
str_map = st.dictionaries(ident, text, max_size=3)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    article_ids = draw(st.lists(ident, max_size=4, unique=True))
    product_ids = draw(st.lists(ident, min_size=1, max_size=3, unique=True))
    variant_ids = iter(draw(st.lists(ident, min_size=12, max_size=12, unique=True)))
    products = []
    for pid in product_ids:
        variants = [
            {"id": next(variant_ids), "sku": draw(text), "title": draw(text),
             "options": draw(str_map), "price": draw(money),
             "compare_at_price": draw(st.one_of(st.none(), money)),
             "available": draw(st.booleans()),
             "inventory": draw(st.one_of(st.none(), st.integers(0, 10**6)))}
            for _ in range(draw(st.integers(1, 4)))
        ]
        products.append({"id": pid, "title": draw(text.filter(bool)), "description": draw(text),
                         "product_type": draw(text), "vendor": draw(text),
                         "tags": draw(st.lists(text, max_size=3)), "url": draw(text),
                         "option_names": draw(st.lists(text, max_size=3)), "variants": variants})
    all_variants = [v["id"] for p in products for v in p["variants"]]
    customer_ids = draw(st.lists(ident, max_size=3, unique=True))
    customers = [
        {"id": cid, "email": draw(text).lower(), "first_name": draw(text),
         "last_name": draw(text), "phone": draw(text), "address": draw(str_map),
         "payment_methods": draw(st.lists(st.fixed_dictionaries({"id": ident, "type": ident}),
                                          max_size=2)),
         "created_at": draw(stamp) or "2020-01-01T00:00:00"}
        for cid in customer_ids
    ]
    orders = []
    for number in draw(st.lists(ident, max_size=4, unique=True)):
        orders.append({
            "number": "#" + number,
            "customer": draw(st.one_of(st.none(), st.sampled_from(customer_ids)))
            if customer_ids else None,
            "status": draw(text.filter(bool)), "placed_at": draw(stamp), "currency": "USD",
            "subtotal": draw(money), "shipping_cost": draw(money), "total": draw(money),
            "email": draw(text).lower(), "shipping_address": draw(str_map),
            "items": [{"product": draw(st.sampled_from(product_ids)),
                       "variant": draw(st.sampled_from(all_variants)),
                       "name": draw(text.filter(bool)),
                       "options": draw(str_map), "quantity": draw(st.integers(1, 50)),
                       "unit_price": draw(money)} for _ in range(draw(st.integers(0, 3)))],
            "shipments": [{"carrier": draw(text), "tracking_number": draw(text),
                           "status": draw(text.filter(bool)), "shipped_at": draw(stamp),
                           "estimated_delivery": draw(stamp), "delivered_at": draw(stamp),
                           "item_ids": draw(st.lists(st.sampled_from(all_variants), max_size=2))}
                          for _ in range(draw(st.integers(0, 2)))],
            "payments": [{"kind": draw(st.sampled_from(["payment", "refund"])),
                          "amount": draw(money), "method": draw(text), "created_at": draw(stamp)}
                         for _ in range(draw(st.integers(0, 2)))],
            "returns": [{"kind": draw(st.sampled_from(["return", "exchange"])),
                         "status": draw(short.filter(bool)), "reason": draw(text),
                         "item_ids": draw(st.lists(st.sampled_from(all_variants), max_size=2)),
                         "requested_at": draw(stamp),
                         "refund_amount": draw(st.one_of(st.none(), money))}
                        for _ in range(draw(st.integers(0, 1)))],
        })
    return {
        "format": "chatbot-store", "version": 1,
        "store": {"name": "x", "title": draw(text), "currency": "EUR",
                  "allowed_origins": draw(st.lists(text, max_size=2)),
                  "settings": draw(st.dictionaries(ident, st.integers(), max_size=2))},
        "articles": [{"id": aid, "kind": draw(st.sampled_from(["faq", "policy"])),
                      "category": draw(text), "title": draw(text.filter(bool)),
                      "body": draw(text.filter(bool)), "url": draw(text)} for aid in article_ids],
        "products": products, "customers": customers, "orders": orders,
    }


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('roundtrip') / 'kb.db'}")
    yield database
    database.dispose()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=documents())
def test_any_valid_document_roundtrips(db: Database, tmp_path: Path, doc: dict[str, Any]) -> None:
    name = f"s{next(_names)}"
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    import_path(db, "json", path, name)
    with db.session() as session:
        exported = export_store(session, get_store(session, name))
    assert exported["store"].pop("name") == name
    doc["store"].pop("name")
    key = {"articles": "id", "products": "id", "customers": "id", "orders": "number"}
    for section, field in key.items():
        doc[section].sort(key=lambda r, f=field: r[f])  # export sorts by id
    assert json.loads(json.dumps(exported)) == doc
    assert not import_path(db, "json", path, name).changed
