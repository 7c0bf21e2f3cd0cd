"""The importers against PostgreSQL, in a throwaway database (skipped when PG is unreachable)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from chatbot.errors import ImportFileError
from chatbot.storage.db import Database
from knowledge_base.demo import ensure_demo_store
from knowledge_base.importers import import_path
from knowledge_base.importers.json_format import dumps, export_store
from knowledge_base.models import Order, Store
from knowledge_base.stores import get_store, store_stats
from tests.pg import throwaway_pg_database

REPO = Path(__file__).resolve().parents[2]
TAU = REPO.parent / "shared" / "datasets" / "tau_retail"
SHOPIFY_SAMPLE = REPO / "tests" / "data" / "shopify_products.csv"

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg() -> Iterator[Database]:
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    with throwaway_pg_database() as url:
        db = Database(url)
        try:
            yield db
        finally:
            db.dispose()


def snapshot(db: Database, name: str) -> str | None:
    with db.session() as session:
        store = session.scalars(select(Store).where(Store.name == name)).first()
        return None if store is None else dumps(export_store(session, store))


def test_demo_store_import_is_idempotent_and_roundtrips(pg: Database, tmp_path: Path) -> None:
    store = ensure_demo_store(pg)
    assert store.widget_key == "demo"
    first = snapshot(pg, "demo") or ""
    path = tmp_path / "demo.json"
    path.write_text(first, encoding="utf-8")
    again = import_path(pg, "json", path, "demo")
    assert not again.changed and again.unchanged["orders"] == 1000
    import_path(pg, "json", path, "demo-copy")
    copy = snapshot(pg, "demo-copy") or ""
    assert copy.replace('"name": "demo-copy"', '"name": "demo"', 1) == first


@pytest.mark.skipif(not (TAU / "orders.json").exists(), reason="no ../shared τ data")
def test_tau_counts_on_postgres(pg: Database) -> None:
    import_path(pg, "tau-retail", TAU, "tau")
    assert not import_path(pg, "tau-retail", TAU, "tau").changed
    with pg.session() as session:
        stats = store_stats(session, get_store(session, "tau"))
        assert (stats["customers"], stats["orders"], stats["products"], stats["variants"]) == (
            500, 1000, 50, 591)
        order = session.scalars(select(Order).where(Order.number == "#W2611340")).one()
        assert order.total == Decimal("536.65")


def test_broken_files_leave_postgres_unchanged(pg: Database, tmp_path: Path) -> None:
    import_path(pg, "shopify-csv", SHOPIFY_SAMPLE, "harbor")
    before = snapshot(pg, "harbor")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({
        "format": "chatbot-store", "version": 1,
        "articles": [{"id": "a1", "title": "Fine", "body": "Fine."}],
        "products": [{"id": "p1", "title": "Broken", "variants": [{"id": "v1", "price": -3}]}],
    }))
    with pytest.raises(ImportFileError, match="product p1, variant v1: field 'price' must not be"):
        import_path(pg, "json", bad, "harbor")
    assert snapshot(pg, "harbor") == before
    with pytest.raises(ImportFileError):
        import_path(pg, "json", bad, "brand-new")
    assert snapshot(pg, "brand-new") is None
