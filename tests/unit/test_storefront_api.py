"""The demo storefront product API (chatbot/server/storefront.py) on a real SQLite database."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from chatbot.server.storefront import ProductQuery, dumps_safe, products_response
from chatbot.storage.db import Database
from knowledge_base.models import Product, Variant
from knowledge_base.stores import get_or_create_store

HOSTILE = '<img src=x onerror="alert(1)"> & </script>'


@pytest.fixture
def db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'shop.db'}")
    with db.transaction() as session:
        demo = get_or_create_store(session, "demo", title="Northwind Outfitters")
        other = get_or_create_store(session, "other")
        catalogue = [
            (demo.id, "rain-jacket", "Ridgeline Rain Jacket", "Rain Jackets", ["149.00", "159.00"]),
            (demo.id, "fleece", "Trailhead Fleece", "Fleece", ["89.00"]),
            (demo.id, "hat", HOSTILE, "Hats", ["25.00"]),
            (demo.id, "pct", "100% Wool Sock_s", "Socks", ["12.00"]),
            (other.id, "secret", "Other Store Jacket", "Rain Jackets", ["1.00"]),
        ]
        for store_id, sid, title, kind, prices in catalogue:
            p = Product(store_id=store_id, source_id=sid, title=title, product_type=kind)
            session.add(p)
            session.flush()
            for i, price in enumerate(prices):
                session.add(Variant(
                    store_id=store_id, product_id=p.id, source_id=f"{sid}-{i}",
                    options={"Color": ["Black", "Moss"][i % 2]}, price=Decimal(price),
                    compare_at_price=Decimal("179.00") if sid == "rain-jacket" else None,
                    available=sid != "fleece",
                ))
    yield db
    db.dispose()


def get(db: Database, **params: str) -> tuple[int, dict]:
    status, body = products_response(db, params)
    return status, json.loads(body)


def test_lists_only_the_requested_stores_products(db: Database) -> None:
    status, data = get(db)
    assert status == 200
    assert data["store"] == {"key": "demo", "title": "Northwind Outfitters", "currency": "USD"}
    assert data["total"] == 4
    assert "Other Store Jacket" not in {p["title"] for p in data["products"]}
    jacket = data["products"][0]
    assert jacket["price"] == "149.00" and jacket["compare_at"] == "179.00"
    assert jacket["colors"] == ["Black", "Moss"]
    assert jacket["available"] is True
    assert data["products"][1]["available"] is False
    assert set(data["types"]) == {"Rain Jackets", "Fleece", "Hats", "Socks"}


def test_search_filter_and_paging(db: Database) -> None:
    assert [p["id"] for p in get(db, q="FLEECE")[1]["products"]] == ["fleece"]
    assert [p["id"] for p in get(db, type="Hats")[1]["products"]] == ["hat"]
    # LIKE wildcards typed by a shopper match literally.
    assert [p["id"] for p in get(db, q="100%")[1]["products"]] == ["pct"]
    assert get(db, q="%")[1]["total"] == 1
    assert get(db, q="k_s")[1]["total"] == 1
    page = get(db, limit="2", offset="2")[1]
    assert page["total"] == 4 and len(page["products"]) == 2 and page["offset"] == 2


def test_body_escapes_markup_but_stays_equal_json(db: Database) -> None:
    status, body = products_response(db, {"type": "Hats"})
    assert status == 200
    assert b"<" not in body and b">" not in body and b"&" not in body
    assert json.loads(body)["products"][0]["title"] == HOSTILE
    assert dumps_safe({"a": "</script>"}) == b'{"a":"\\u003c/script\\u003e"}'


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"limit": "0"}, "'limit'"),
        ({"limit": "61"}, "'limit'"),
        ({"limit": "ten"}, "'limit'"),
        ({"offset": "-1"}, "'offset'"),
        ({"q": "x" * 101}, "'q'"),
    ],
)
def test_bad_parameters_get_a_clear_400(db: Database, params: dict, fragment: str) -> None:
    status, data = get(db, **params)
    assert status == 400
    assert data["error"]["code"] == "bad_query"
    assert fragment in data["error"]["message"]


def test_unknown_store_is_404(db: Database) -> None:
    status, data = get(db, store="nope")
    assert status == 404 and data["error"]["code"] == "unknown_store"


def test_query_defaults() -> None:
    assert ProductQuery.parse({}) == ProductQuery(store="demo", q="", type="", limit=24, offset=0)
