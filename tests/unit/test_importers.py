"""Importers: the JSON store format, tau-bench retail, Shopify CSV; errors, idempotency."""

from __future__ import annotations

import copy
import csv
import gzip
import json
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from chatbot.errors import ChatbotError, ImportFileError, StoreNotFoundError
from chatbot.storage.db import Database
from knowledge_base.importers import get_reader, import_path
from knowledge_base.importers.json_format import dumps, export_store
from knowledge_base.importers.shopify_csv import html_to_text
from knowledge_base.importers.tau_retail import policy_articles
from knowledge_base.models import (
    Article,
    Customer,
    Order,
    OrderItem,
    Product,
    Store,
    Variant,
)
from knowledge_base.stores import get_or_create_store, get_store, store_stats

REPO = Path(__file__).resolve().parents[2]
TAU = REPO.parent / "shared" / "datasets" / "tau_retail"
SHOPIFY_SAMPLE = REPO / "tests" / "data" / "shopify_products.csv"

needs_tau = pytest.mark.skipif(not (TAU / "orders.json").exists(), reason="no ../shared τ data")


def small_store() -> dict[str, Any]:
    """A tiny but complete store document in our JSON format."""
    return {
        "format": "chatbot-store",
        "version": 1,
        "store": {"title": "Tiny Shop", "currency": "USD", "allowed_origins": [],
                  "settings": {"support_email": "help@tiny.example"}},
        "articles": [
            {"id": "returns", "kind": "policy", "category": "returns", "title": "Returns",
             "body": "Return within 30 days.", "url": ""},
            {"id": "shipping", "kind": "faq", "category": "shipping", "title": "Shipping?",
             "body": "Ships in 2 days.", "url": ""},
        ],
        "products": [
            {"id": "mug", "title": "Mug", "description": "A mug.", "product_type": "Mugs",
             "vendor": "Tiny", "tags": ["kitchen"], "url": "", "option_names": ["Color"],
             "variants": [
                 {"id": "MUG-RED", "sku": "MUG-RED", "title": "Red", "options": {"Color": "Red"},
                  "price": 12.5, "compare_at_price": None, "available": True, "inventory": 3},
                 {"id": "MUG-BLU", "sku": "MUG-BLU", "title": "Blue",
                  "options": {"Color": "Blue"}, "price": "12.50", "available": False,
                  "inventory": 0},
             ]},
        ],
        "customers": [
            {"id": "ann_lee_1001", "email": "Ann@Example.com", "first_name": "Ann",
             "last_name": "Lee", "phone": "", "address": {"city": "Bend", "country": "USA"},
             "payment_methods": [{"id": "card_1", "type": "card", "last_four": "4242"}],
             "created_at": "2026-01-05T10:00:00"},
        ],
        "orders": [
            {"number": "#T1001", "customer": "ann_lee_1001", "status": "delivered",
             "placed_at": "2026-02-01T09:30:00Z", "subtotal": 25.0, "shipping_cost": 5.95,
             "total": 30.95, "email": "ann@example.com", "shipping_address": {"city": "Bend"},
             "items": [{"product": "mug", "variant": "MUG-RED", "name": "Mug",
                        "options": {"Color": "Red"}, "quantity": 2, "unit_price": 12.5}],
             "shipments": [{"carrier": "UPS", "tracking_number": "1Z999AA10123456784",
                            "status": "delivered", "shipped_at": "2026-02-01T17:00:00",
                            "delivered_at": "2026-02-04T12:00:00", "item_ids": ["MUG-RED"]}],
             "payments": [{"kind": "payment", "amount": 30.95, "method": "Visa ending in 4242",
                           "created_at": "2026-02-01T09:30:00"}],
             "returns": []},
            {"number": "#T1002", "customer": None, "status": "pending", "email": "g@x.example",
             "items": [{"name": "Mug", "variant": "MUG-BLU", "unit_price": 12.5}]},
        ],
    }


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test gets a copy (migrating per test is the slow part)."""
    path = tmp_path_factory.mktemp("template") / "kb.db"
    Database(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture()
def db(tmp_path: Path, migrated: Path) -> Iterator[Database]:
    path = tmp_path / "kb.db"
    shutil.copyfile(migrated, path)
    database = Database(f"sqlite:///{path}", run_migrations=False)
    yield database
    database.dispose()


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def snapshot(db: Database, store: str) -> str | None:
    """The whole store as exported JSON, or None when it does not exist."""
    with db.session() as session:
        row = session.scalars(select(Store).where(Store.name == store)).first()
        return None if row is None else dumps(export_store(session, row))


# --- JSON store format -------------------------------------------------------------------


def test_json_import_creates_every_kind_of_row(db: Database, tmp_path: Path) -> None:
    path = write_json(tmp_path / "s.json", small_store())
    summary = import_path(db, "json", path, "tiny")
    assert summary.created["articles"] == 2 and summary.created["variants"] == 2
    assert summary.created["orders"] == 2
    with db.session() as session:
        store = get_store(session, "tiny")
        assert store.title == "Tiny Shop" and store.widget_key == "tiny"
        order = session.scalars(select(Order).where(Order.number == "#T1001")).one()
        assert order.customer is not None and order.customer.source_id == "ann_lee_1001"
        assert order.customer.email == "ann@example.com"  # emails are compared lower-case
        assert order.total == Decimal("30.95") and order.items[0].quantity == 2
        assert order.items[0].variant_id is not None  # linked to the catalogue variant
        assert order.placed_at is not None and order.placed_at.isoformat() == "2026-02-01T09:30:00"
        assert order.shipments[0].tracking_number == "1Z999AA10123456784"
        guest = session.scalars(select(Order).where(Order.number == "#T1002")).one()
        assert guest.customer_id is None and guest.items[0].quantity == 1
        blue = session.scalars(select(Variant).where(Variant.source_id == "MUG-BLU")).one()
        assert blue.available is False and blue.price == Decimal("12.50")


def test_json_reimport_is_idempotent_and_updates_only_changes(db: Database, tmp_path: Path
                                                               ) -> None:
    doc = small_store()
    path = write_json(tmp_path / "s.json", doc)
    import_path(db, "json", path, "tiny")
    before = snapshot(db, "tiny")
    again = import_path(db, "json", path, "tiny")
    assert not again.changed
    assert again.unchanged["orders"] == 2 and again.unchanged["variants"] == 2
    assert snapshot(db, "tiny") == before

    with db.session() as session:
        stamps = dict(session.execute(select(Article.source_id, Article.updated_at)).all())
    changed = copy.deepcopy(doc)
    changed["articles"][0]["body"] = "Return within 45 days."
    changed["orders"][0]["shipments"][0]["status"] = "returned"
    changed["products"][0]["variants"][0]["price"] = 14
    third = import_path(db, "json", write_json(tmp_path / "s2.json", changed), "tiny")
    assert third.updated["articles"] == 1 and third.unchanged["articles"] == 1
    assert third.updated["orders"] == 1 and third.unchanged["orders"] == 1
    assert third.updated["variants"] == 1
    with db.session() as session:
        # Only edited rows get a new updated_at: incremental index sync relies on it.
        after = dict(session.execute(select(Article.source_id, Article.updated_at)).all())
        assert after["shipping"] == stamps["shipping"] and after["returns"] > stamps["returns"]
        assert session.scalar(select(func.count()).select_from(OrderItem)) == 2  # no duplicates
        order = session.scalars(select(Order).where(Order.number == "#T1001")).one()
        assert order.shipments[0].status == "returned" and len(order.shipments) == 1


@pytest.mark.parametrize(
    ("mutate", "location", "reason"),
    [
        (lambda d: d["articles"][1].pop("title"), "article shipping", "missing required field"),
        (lambda d: d["products"][0]["variants"][1].update(price="cheap"),
         "product mug, variant MUG-BLU", "not a valid amount"),
        (lambda d: d["products"][0]["variants"][0].update(available="yes"),
         "variant MUG-RED", "must be true or false"),
        (lambda d: d["orders"][0].update(items={"name": "x"}), "order #T1001", "must be a list"),
        (lambda d: d["orders"][0]["items"][0].update(quantity=0), "order #T1001, item #1",
         "at least 1"),
        (lambda d: d["orders"][0].update(placed_at="yesterday"), "order #T1001",
         "ISO 8601"),
        (lambda d: d["orders"][1].update(customer="nobody_0000"), "order #T1002",
         "unknown customer"),
        (lambda d: d["customers"].append(dict(d["customers"][0])), "customer ann_lee_1001",
         "duplicate"),
        (lambda d: d["articles"][0].update(kind="blog"), "article returns", "must be one of"),
    ],
)
def test_json_broken_record_names_record_and_changes_nothing(
    db: Database, tmp_path: Path, mutate: Any, location: str, reason: str
) -> None:
    import_path(db, "json", write_json(tmp_path / "good.json", small_store()), "tiny")
    before = snapshot(db, "tiny")
    broken = small_store()
    broken["articles"][0]["body"] = "This edit must not land."
    mutate(broken)
    path = write_json(tmp_path / "bad.json", broken)
    with pytest.raises(ImportFileError) as err:
        import_path(db, "json", path, "tiny")
    assert err.value.path == str(path)
    assert location in err.value.location
    assert reason in err.value.reason
    assert str(path) in str(err.value)
    assert snapshot(db, "tiny") == before


def test_json_syntax_error_reports_line_and_creates_no_store(db: Database, tmp_path: Path
                                                              ) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"format": "chatbot-store",\n "version": 1,\n "articles": [,]}\n')
    with pytest.raises(ImportFileError) as err:
        import_path(db, "json", path, "fresh")
    assert err.value.location == "line 3" and "invalid JSON" in err.value.reason
    assert snapshot(db, "fresh") is None


def test_json_rejects_other_documents(db: Database, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="not a store file"):
        import_path(db, "json", write_json(tmp_path / "x.json", {"hello": 1}), "x")
    with pytest.raises(ImportFileError, match="must be an object"):
        import_path(db, "json", write_json(tmp_path / "y.json", [1, 2]), "x")


def test_export_then_import_gives_back_the_same_store(db: Database, tmp_path: Path) -> None:
    import_path(db, "json", write_json(tmp_path / "s.json", small_store()), "tiny")
    first = json.loads(snapshot(db, "tiny") or "")
    exported = tmp_path / "export.json.gz"
    exported.write_bytes(gzip.compress(json.dumps(first).encode()))  # gzip is read too
    import_path(db, "json", exported, "tiny-copy")
    second = json.loads(snapshot(db, "tiny-copy") or "")
    assert second["store"].pop("name") == "tiny-copy"
    assert first["store"].pop("name") == "tiny"
    assert first == second


def test_demo_store_roundtrip_is_identical(db: Database, tmp_path: Path) -> None:
    from knowledge_base.demo import DEMO_STORE_FILE, ensure_demo_store

    ensure_demo_store(db)
    original = snapshot(db, "demo") or ""
    path = tmp_path / "demo.json"
    path.write_text(original, encoding="utf-8")
    import_path(db, "json", path, "demo-copy")
    copied = snapshot(db, "demo-copy") or ""
    assert copied.replace('"name": "demo-copy"', '"name": "demo"', 1) == original
    # ... and the export holds exactly what the shipped file holds.
    shipped = json.loads(gzip.decompress(DEMO_STORE_FILE.read_bytes()))
    exported = json.loads(original)
    for key in ("articles", "products", "customers", "orders"):
        ident = "number" if key == "orders" else "id"
        assert sorted(exported[key], key=lambda r: r[ident]) == sorted(
            shipped[key], key=lambda r: r[ident]
        )


# --- tau-bench retail --------------------------------------------------------------------


@needs_tau
def test_tau_counts_ids_and_idempotency(db: Database) -> None:
    first = import_path(db, "tau-retail", TAU, "tau")
    assert first.created["customers"] == 500 and first.created["orders"] == 1000
    assert first.created["products"] == 50 and first.created["variants"] == 591
    second = import_path(db, "tau-retail", TAU, "tau")
    assert not second.changed and second.unchanged["orders"] == 1000
    with db.session() as session:
        store = get_store(session, "tau")
        stats = store_stats(session, store)
        assert (stats["customers"], stats["orders"], stats["products"], stats["variants"]) == (
            500, 1000, 50, 591)
        assert stats["orders_by_status"] == {"pending": 423, "delivered": 373,
                                             "cancelled": 102, "processed": 102}
        assert stats["shipments"] == 577 and stats["refunds"] == 102
        assert stats["articles_by_kind"]["policy"] >= 5
        noah = session.scalars(select(Customer).where(Customer.source_id == "noah_brown_6181")
                               ).one()
        assert [o.number for o in noah.orders] == ["#W7678072"]
        assert {m["id"] for m in noah.payment_methods} == {"paypal_5727330",
                                                          "credit_card_7815826"}
        order = session.scalars(select(Order).where(Order.number == "#W2611340")).one()
        assert order.status == "processed" and order.placed_at is None
        assert order.shipments[0].tracking_number == "357962501027"
        assert order.payments[0].method == "gift_card_1725971"
        assert order.total == Decimal("536.65")
        tee = session.scalars(select(Product).where(Product.source_id == "9523456873")).one()
        assert "T-Shirt" in tee.description and "crew neck" in tee.description
        # No quantity in the source: repeated item lines become one line with quantity 2+.
        merged = session.scalars(select(OrderItem).where(OrderItem.quantity > 1)).all()
        assert len(merged) == 7


@needs_tau
def test_tau_broken_order_names_the_record(db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "tau"
    shutil.copytree(TAU, folder)
    orders = json.loads((folder / "orders.json").read_text())
    orders["#W2611340"]["items"][0]["price"] = "free"
    (folder / "orders.json").write_text(json.dumps(orders))
    with pytest.raises(ImportFileError) as err:
        import_path(db, "tau-retail", folder, "tau")
    assert err.value.path.endswith("orders.json")
    assert "record #W2611340" in err.value.location and "not a valid amount" in err.value.reason
    assert snapshot(db, "tau") is None


def test_tau_policy_splits_at_level_two_headings() -> None:
    wiki = "# Agent policy\n\nIntro text.\n\n## Returns\n\nWithin 30 days.\n\n### Detail\n\nMore.\n"
    articles = policy_articles(wiki)
    assert [a["source_id"] for a in articles] == ["policy-agent-policy", "policy-returns"]
    assert "### Detail" in articles[1]["body"] and articles[1]["kind"] == "policy"


# --- Shopify CSV -------------------------------------------------------------------------


def test_shopify_sample_groups_rows_by_handle(db: Database) -> None:
    summary = import_path(db, "shopify-csv", SHOPIFY_SAMPLE, "harbor")
    # Drafts and archived products are not sellable and are skipped.
    assert summary.created["products"] == 5 and summary.created["variants"] == 13
    with db.session() as session:
        mug = session.scalars(select(Product).where(Product.source_id == "classic-stoneware-mug")
                              ).one()
        assert mug.title == "Classic Stoneware Mug" and mug.product_type == "Mugs"
        assert "<" not in mug.description and "small batches & glazed" in mug.description
        assert "- Dishwasher & microwave safe" in mug.description
        assert mug.tags == ["ceramics", "mugs", "gift"] and mug.option_names == ["Color"]
        assert {v.sku: v.available for v in mug.variants} == {
            "HC-MUG-SAN": True, "HC-MUG-SLA": False, "HC-MUG-MOS": True}
        kettle = session.scalars(select(Variant).where(Variant.sku == "HC-KET-01")).one()
        assert kettle.options == {} and kettle.compare_at_price == Decimal("79.00")
        backorder = session.scalars(select(Variant).where(Variant.sku == "HC-APR-LX-IND")).one()
        assert backorder.available is True and backorder.inventory == 0  # policy "continue"
        gift = session.scalars(select(Variant).where(
            Variant.source_id == "harbor-gift-card/$50.00")).one()
        assert gift.price == Decimal("50.00")
        assert session.scalars(select(Product).where(Product.source_id == "stoneware-teapot")
                               ).first() is None
    assert not import_path(db, "shopify-csv", SHOPIFY_SAMPLE, "harbor").changed


def _csv_with(tmp_path: Path, edit: Any) -> tuple[Path, int]:
    """The sample CSV with one edited row; returns the path and that row's line number."""
    with open(SHOPIFY_SAMPLE, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows, starts, line = [], [], reader.line_num + 1
        for row in reader:
            rows.append(row)
            starts.append(line)
            line = reader.line_num + 1
    index = edit(rows)
    path = tmp_path / "products.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path, starts[index]


def test_shopify_bad_price_reports_its_line_and_changes_nothing(db: Database, tmp_path: Path
                                                                ) -> None:
    import_path(db, "shopify-csv", SHOPIFY_SAMPLE, "harbor")
    before = snapshot(db, "harbor")

    def bad_price(rows: list[dict[str, str]]) -> int:
        rows[0]["Title"] = "Renamed mug that must not be saved"
        rows[8]["Variant Price"] = "12,5O"
        return 8

    path, line = _csv_with(tmp_path, bad_price)
    assert line > 9  # the mug's multi-line HTML body shifts physical lines
    with pytest.raises(ImportFileError) as err:
        import_path(db, "shopify-csv", path, "harbor")
    assert err.value.location == f"line {line}"
    assert "Variant Price" in err.value.reason and "not a valid amount" in err.value.reason
    assert snapshot(db, "harbor") == before


def test_shopify_missing_column_and_missing_title(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("Handle,Title\nmug,Mug\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="line 1: missing column 'Variant Price'"):
        import_path(db, "shopify-csv", path, "x")

    def no_title(rows: list[dict[str, str]]) -> int:
        rows[5]["Title"] = ""
        return 5

    path, line = _csv_with(tmp_path, no_title)
    with pytest.raises(ImportFileError) as err:
        import_path(db, "shopify-csv", path, "x")
    assert err.value.location == f"line {line}" and "no Title" in err.value.reason


def test_html_to_text_keeps_structure() -> None:
    text = html_to_text("<p>Hi &amp; welcome</p><ul><li>One</li><li>Two</li></ul>"
                        "<p>Line<br>break</p><script>alert(1)</script>")
    assert text == "Hi & welcome\n\n- One\n- Two\n\nLine\nbreak"


# --- stores and isolation ------------------------------------------------------------------


def test_same_source_ids_live_in_separate_stores(db: Database, tmp_path: Path) -> None:
    path = write_json(tmp_path / "s.json", small_store())
    import_path(db, "json", path, "one")
    import_path(db, "json", path, "two")
    changed = small_store()
    changed["orders"][0]["status"] = "returned"
    import_path(db, "json", write_json(tmp_path / "c.json", changed), "two")
    with db.session() as session:
        one, two = get_store(session, "one"), get_store(session, "two")
        rows = session.execute(
            select(Order.store_id, Order.status).where(Order.number == "#T1001")
        ).all()
        assert sorted(rows) == sorted([(one.id, "delivered"), (two.id, "returned")])
        # Each store's order points at its own customer and variants, never the other's.
        for store in (one, two):
            order = session.scalars(select(Order).where(
                Order.store_id == store.id, Order.number == "#T1001")).one()
            assert order.customer is not None and order.customer.store_id == store.id
            variant = session.get(Variant, order.items[0].variant_id)
            assert variant is not None and variant.store_id == store.id


def test_store_lookup_by_name_or_widget_key(db: Database) -> None:
    with db.transaction() as session:
        get_or_create_store(session, "northwind", title="Northwind", widget_key="nw-public")
    with db.session() as session:
        assert get_store(session, "northwind").widget_key == "nw-public"
        assert get_store(session, "nw-public").name == "northwind"
        with pytest.raises(StoreNotFoundError):
            get_store(session, "nope")
    with db.transaction() as session, pytest.raises(ChatbotError, match="already used"):
        get_or_create_store(session, "other", widget_key="nw-public")
    with db.transaction() as session, pytest.raises(ChatbotError, match="invalid store name"):
        get_or_create_store(session, "bad name!")


def test_store_fields_from_a_file_never_widen_origins(db: Database, tmp_path: Path) -> None:
    doc = small_store()
    doc["store"]["allowed_origins"] = ["https://tiny.example"]
    import_path(db, "json", write_json(tmp_path / "a.json", doc), "tiny")
    with db.transaction() as session:
        store = get_store(session, "tiny")
        store.settings = {**store.settings, "handoff": "weekdays"}
    doc["store"]["allowed_origins"] = []  # "any origin": must not replace a real list
    doc["store"]["settings"] = {"support_email": "new@tiny.example"}
    doc["store"]["title"] = "Tiny Shop Co"
    assert import_path(db, "json", write_json(tmp_path / "b.json", doc), "tiny").updated[
        "store"] == 1
    with db.session() as session:
        store = get_store(session, "tiny")
        assert store.allowed_origins == ["https://tiny.example"]
        assert store.settings == {"support_email": "new@tiny.example", "handoff": "weekdays"}
        assert store.title == "Tiny Shop Co"
        secret = store.identity_secret
    doc["store"]["allowed_origins"] = ["https://shop.tiny.example"]
    import_path(db, "json", write_json(tmp_path / "c.json", doc), "tiny")
    with db.session() as session:
        store = get_store(session, "tiny")
        assert store.allowed_origins == ["https://shop.tiny.example"]
        assert store.identity_secret == secret  # never touched by an import


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ChatbotError, match="unknown import format 'xml'"):
        get_reader("xml")
