"""Our own JSON store format: one file holding a whole store (see docs/store-format.md).

``read(path)`` validates the whole file into :class:`StoreData`; ``export_store`` writes
the inverse, so exporting a store and importing the file elsewhere gives the same store.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from chatbot.errors import ImportFileError
from knowledge_base.importers.records import Checker, StoreData, check_unique
from knowledge_base.models import (
    Article,
    Customer,
    Order,
    OrderItem,
    Payment,
    Product,
    Return,
    Shipment,
    Store,
    Variant,
)

log = logging.getLogger(__name__)

FORMAT_NAME = "chatbot-store"
FORMAT_VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"

ARTICLE_KINDS = ("faq", "policy")
PAYMENT_KINDS = ("payment", "refund")
RETURN_KINDS = ("return", "exchange")


def read(path: Path) -> StoreData:
    """Parse and validate a store file; raises ImportFileError naming the bad record."""
    where = str(path)
    try:
        blob = Path(path).read_bytes()
        if blob[:2] == GZIP_MAGIC:
            blob = gzip.decompress(blob)
        raw = json.loads(blob.decode("utf-8"))
    except FileNotFoundError:
        raise ImportFileError(where, "file", "no such file") from None
    except IsADirectoryError:
        raise ImportFileError(where, "file", "is a directory, expected a .json file") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise ImportFileError(where, "file", f"cannot read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(where, "file", f"not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ImportFileError(where, f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
    top = Checker(where, "top level")
    doc = top.obj(raw, "the file")
    if doc.get("format") != FORMAT_NAME:
        raise top.fail(f"not a store file: 'format' must be {FORMAT_NAME!r}")
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise top.fail(f"unsupported format version {version!r} (expected {FORMAT_VERSION})")
    data = StoreData(meta=_meta(where, doc.get("store", {})))
    data.articles = [_article(where, i, r) for i, r in _records(top, doc, "articles")]
    data.products = [_product(where, i, r) for i, r in _records(top, doc, "products")]
    data.customers = [_customer(where, i, r) for i, r in _records(top, doc, "customers")]
    data.orders = [_order(where, i, r) for i, r in _records(top, doc, "orders")]
    check_unique(where, "article", [a["source_id"] for a in data.articles])
    check_unique(where, "product", [p["source_id"] for p in data.products])
    check_unique(where, "variant", [v["source_id"] for p in data.products for v in p["variants"]])
    check_unique(where, "customer", [c["source_id"] for c in data.customers])
    check_unique(where, "order", [o["number"] for o in data.orders])
    return data


def _records(top: Checker, doc: dict[str, Any], key: str) -> Iterable[tuple[int, Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise top.fail(f"{key!r} must be a list")
    return enumerate(value)


def _label(kind: str, index: int, rec: Any, key: str = "id") -> str:
    if isinstance(rec, dict) and isinstance(rec.get(key), str) and rec[key]:
        return f"{kind} {rec[key]}"
    return f"{kind} #{index + 1}"


def _meta(where: str, raw: Any) -> dict[str, Any]:
    c = Checker(where, "store")
    rec = c.obj(raw, "'store'")
    meta: dict[str, Any] = {}
    if "title" in rec:
        meta["title"] = c.text(rec, "title", max_len=200)
    if "currency" in rec:
        currency = c.text(rec, "currency").upper()
        if len(currency) != 3 or not currency.isalpha():
            raise c.fail(f"field 'currency' must be a 3-letter code, got {currency!r}")
        meta["currency"] = currency
    if "allowed_origins" in rec:
        meta["allowed_origins"] = c.str_list(rec, "allowed_origins")
    if "settings" in rec:
        meta["settings"] = c.obj(rec["settings"], "field 'settings'")
    return meta


def _article(where: str, index: int, raw: Any) -> dict[str, Any]:
    c = Checker(where, _label("article", index, raw))
    rec = c.obj(raw, "an article")
    return {
        "source_id": c.text(rec, "id", required=True, max_len=200),
        "kind": c.choice(rec, "kind", ARTICLE_KINDS, "faq"),
        "category": c.text(rec, "category", max_len=100),
        "title": c.text(rec, "title", required=True, max_len=300),
        "body": c.text(rec, "body", required=True),
        "url": c.text(rec, "url", max_len=500),
    }


def _product(where: str, index: int, raw: Any) -> dict[str, Any]:
    c = Checker(where, _label("product", index, raw))
    rec = c.obj(raw, "a product")
    product: dict[str, Any] = {
        "source_id": c.text(rec, "id", required=True, max_len=100),
        "title": c.text(rec, "title", required=True, max_len=300),
        "description": c.text(rec, "description"),
        "product_type": c.text(rec, "product_type", max_len=100),
        "vendor": c.text(rec, "vendor", max_len=100),
        "tags": c.str_list(rec, "tags"),
        "url": c.text(rec, "url", max_len=500),
        "option_names": c.str_list(rec, "option_names"),
    }
    variants = rec.get("variants")
    if not isinstance(variants, list) or not variants:
        raise c.fail("field 'variants' must be a non-empty list")
    product["variants"] = [
        _variant(where, product["source_id"], i, v) for i, v in enumerate(variants)
    ]
    return product


def _variant(where: str, product_id: str, index: int, raw: Any) -> dict[str, Any]:
    c = Checker(where, f"product {product_id}, {_label('variant', index, raw)}")
    rec = c.obj(raw, "a variant")
    return {
        "source_id": c.text(rec, "id", required=True, max_len=100),
        "sku": c.text(rec, "sku", max_len=100),
        "title": c.text(rec, "title", max_len=300),
        "options": c.str_map(rec, "options"),
        "price": c.money(rec, "price", required=True),
        "compare_at_price": c.money(rec, "compare_at_price"),
        "available": c.boolean(rec, "available", default=True),
        "inventory": c.integer(rec, "inventory"),
    }


def _customer(where: str, index: int, raw: Any) -> dict[str, Any]:
    c = Checker(where, _label("customer", index, raw))
    rec = c.obj(raw, "a customer")
    methods = rec.get("payment_methods", [])
    if not isinstance(methods, list) or not all(isinstance(m, dict) for m in methods):
        raise c.fail("field 'payment_methods' must be a list of objects")
    return {
        "source_id": c.text(rec, "id", required=True, max_len=200),
        "email": c.text(rec, "email", max_len=300).lower(),
        "first_name": c.text(rec, "first_name", max_len=100),
        "last_name": c.text(rec, "last_name", max_len=100),
        "phone": c.text(rec, "phone", max_len=50),
        "address": c.str_map(rec, "address"),
        "payment_methods": methods,
        "created_at": c.timestamp(rec, "created_at"),
    }


def _order(where: str, index: int, raw: Any) -> dict[str, Any]:
    c = Checker(where, _label("order", index, raw, key="number"))
    rec = c.obj(raw, "an order")
    customer = rec.get("customer")
    if customer is not None and (not isinstance(customer, str) or not customer):
        raise c.fail("field 'customer' must be a customer id string or null")
    order: dict[str, Any] = {
        "number": c.text(rec, "number", required=True, max_len=100),
        "customer": customer,
        "status": c.text(rec, "status", required=True, max_len=50),
        "placed_at": c.timestamp(rec, "placed_at"),
        "currency": c.text(rec, "currency", default="USD").upper(),
        "subtotal": c.money(rec, "subtotal", default=Decimal("0.00")),
        "shipping_cost": c.money(rec, "shipping_cost", default=Decimal("0.00")),
        "total": c.money(rec, "total", default=Decimal("0.00")),
        "email": c.text(rec, "email", max_len=300).lower(),
        "shipping_address": c.str_map(rec, "shipping_address"),
        "cancel_reason": c.text(rec, "cancel_reason", max_len=100) or None,
    }
    order["items"] = [_item(c, i, r) for i, r in enumerate(_list(c, rec, "items"))]
    order["shipments"] = [_shipment(c, i, r) for i, r in enumerate(_list(c, rec, "shipments"))]
    order["payments"] = [_payment(c, i, r) for i, r in enumerate(_list(c, rec, "payments"))]
    order["returns"] = [_return(c, i, r) for i, r in enumerate(_list(c, rec, "returns"))]
    return order


def _list(c: Checker, rec: dict[str, Any], key: str) -> list[Any]:
    value = rec.get(key, [])
    if not isinstance(value, list):
        raise c.fail(f"field {key!r} must be a list")
    return value


def _child(parent: Checker, what: str, index: int) -> Checker:
    return Checker(parent.path, f"{parent.location}, {what} #{index + 1}")


def _item(parent: Checker, index: int, raw: Any) -> dict[str, Any]:
    c = _child(parent, "item", index)
    rec = c.obj(raw, "an item")
    return {
        "product_source_id": c.text(rec, "product", max_len=100),
        "variant_source_id": c.text(rec, "variant", max_len=100),
        "name": c.text(rec, "name", required=True, max_len=300),
        "options": c.str_map(rec, "options"),
        "quantity": c.integer(rec, "quantity", default=1, minimum=1),
        "unit_price": c.money(rec, "unit_price", required=True),
        "positions": _positions(c, rec),
    }


def _positions(c: Checker, rec: dict[str, Any]) -> list[int]:
    value = rec.get("positions", [])
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise c.fail("field 'positions' must be a list of non-negative integers")
    return list(value)


def _shipment(parent: Checker, index: int, raw: Any) -> dict[str, Any]:
    c = _child(parent, "shipment", index)
    rec = c.obj(raw, "a shipment")
    return {
        "carrier": c.text(rec, "carrier", max_len=100),
        "tracking_number": c.text(rec, "tracking_number", max_len=100),
        "status": c.text(rec, "status", default="label_created", max_len=50),
        "shipped_at": c.timestamp(rec, "shipped_at"),
        "estimated_delivery": c.timestamp(rec, "estimated_delivery"),
        "delivered_at": c.timestamp(rec, "delivered_at"),
        "item_ids": c.str_list(rec, "item_ids"),
    }


def _payment(parent: Checker, index: int, raw: Any) -> dict[str, Any]:
    c = _child(parent, "payment", index)
    rec = c.obj(raw, "a payment")
    return {
        "kind": c.choice(rec, "kind", PAYMENT_KINDS, "payment"),
        "amount": c.money(rec, "amount", required=True),
        "method": c.text(rec, "method", max_len=100),
        "created_at": c.timestamp(rec, "created_at"),
    }


def _return(parent: Checker, index: int, raw: Any) -> dict[str, Any]:
    c = _child(parent, "return", index)
    rec = c.obj(raw, "a return")
    return {
        "status": c.text(rec, "status", default="requested", max_len=30),
        "kind": c.choice(rec, "kind", RETURN_KINDS, "return"),
        "reason": c.text(rec, "reason", max_len=300),
        "item_ids": c.str_list(rec, "item_ids"),
        "requested_at": c.timestamp(rec, "requested_at"),
        "refund_amount": c.money(rec, "refund_amount"),
        "new_item_ids": c.str_list(rec, "new_item_ids"),
        "payment_method": c.text(rec, "payment_method", max_len=100),
        "price_difference": c.signed_money(rec, "price_difference"),
    }


# --- export -------------------------------------------------------------------------------


def export_store(session: Session, store: Store) -> dict[str, Any]:
    """The whole store as a JSON-ready document in this format (no secrets, no widget key).

    Reads with plain SELECTs (no ORM objects), so large stores export quickly.
    """
    sid = store.id
    t = {m.__tablename__: m.__table__ for m in (Article, Product, Variant, Customer, Order)}
    orders_t = t["orders"]

    def rows(stmt: Any) -> list[Any]:
        return list(session.execute(stmt).mappings())

    articles = rows(select(t["articles"]).where(t["articles"].c.store_id == sid)
                    .order_by(t["articles"].c.source_id))
    products = rows(select(t["products"]).where(t["products"].c.store_id == sid)
                    .order_by(t["products"].c.source_id))
    variants: dict[int, list[Any]] = defaultdict(list)
    for v in rows(select(t["variants"]).where(t["variants"].c.store_id == sid)
                  .order_by(t["variants"].c.id)):
        variants[v["product_id"]].append(v)
    customers = rows(select(t["customers"]).where(t["customers"].c.store_id == sid)
                     .order_by(t["customers"].c.source_id))
    customer_ids = {c["id"]: c["source_id"] for c in customers}
    orders = rows(select(orders_t).where(orders_t.c.store_id == sid).order_by(orders_t.c.number))
    children: dict[str, dict[int, list[Any]]] = {}
    for name, model in (("items", OrderItem), ("shipments", Shipment), ("payments", Payment),
                        ("returns", Return)):
        table = model.__table__
        grouped: dict[int, list[Any]] = defaultdict(list)
        stmt = (select(table).join(orders_t, orders_t.c.id == table.c.order_id)
                .where(orders_t.c.store_id == sid).order_by(table.c.id))
        for row in rows(stmt):
            grouped[row["order_id"]].append(row)
        children[name] = grouped
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "store": {
            "name": store.name,
            "title": store.title,
            "currency": store.currency,
            "allowed_origins": list(store.allowed_origins or []),
            "settings": dict(store.settings or {}),
        },
        "articles": [
            {"id": a["source_id"], "kind": a["kind"], "category": a["category"],
             "title": a["title"], "body": a["body"], "url": a["url"]}
            for a in articles
        ],
        "products": [_export_product(p, variants[p["id"]]) for p in products],
        "customers": [
            {"id": c["source_id"], "email": c["email"], "first_name": c["first_name"],
             "last_name": c["last_name"], "phone": c["phone"], "address": c["address"] or {},
             "payment_methods": c["payment_methods"] or [], "created_at": _ts(c["created_at"])}
            for c in customers
        ],
        "orders": [
            _export_order(o, customer_ids.get(o["customer_id"]),
                          {name: grouped.get(o["id"], []) for name, grouped in children.items()})
            for o in orders
        ],
    }


def _export_product(p: Any, variants: list[Any]) -> dict[str, Any]:
    return {
        "id": p["source_id"], "title": p["title"], "description": p["description"],
        "product_type": p["product_type"], "vendor": p["vendor"], "tags": p["tags"] or [],
        "url": p["url"], "option_names": p["option_names"] or [],
        "variants": [
            {"id": v["source_id"], "sku": v["sku"], "title": v["title"],
             "options": v["options"] or {}, "price": _money(v["price"]),
             "compare_at_price": _money(v["compare_at_price"]), "available": bool(v["available"]),
             "inventory": v["inventory"]}
            for v in variants
        ],
    }


def _export_order(o: Any, customer: str | None, kids: dict[str, list[Any]]) -> dict[str, Any]:
    # Fields added for order actions are written only when set, so older files stay as
    # they were.
    doc = _export_order_base(o, customer, kids)
    if o["cancel_reason"]:
        doc["cancel_reason"] = o["cancel_reason"]
    for item, row in zip(doc["items"], kids["items"], strict=True):
        if row["positions"]:
            item["positions"] = list(row["positions"])
    for ret, row in zip(doc["returns"], kids["returns"], strict=True):
        if row["new_item_ids"]:
            ret["new_item_ids"] = list(row["new_item_ids"])
        if row["payment_method"]:
            ret["payment_method"] = row["payment_method"]
        if row["price_difference"] is not None:
            ret["price_difference"] = _money(row["price_difference"])
    return doc


def _export_order_base(o: Any, customer: str | None, kids: dict[str, list[Any]]
                       ) -> dict[str, Any]:
    return {
        "number": o["number"],
        "customer": customer,
        "status": o["status"], "placed_at": _ts(o["placed_at"]), "currency": o["currency"],
        "subtotal": _money(o["subtotal"]), "shipping_cost": _money(o["shipping_cost"]),
        "total": _money(o["total"]), "email": o["email"],
        "shipping_address": o["shipping_address"] or {},
        "items": [
            {"product": i["product_source_id"], "variant": i["variant_source_id"],
             "name": i["name"], "options": i["options"] or {}, "quantity": i["quantity"],
             "unit_price": _money(i["unit_price"])}
            for i in kids["items"]
        ],
        "shipments": [
            {"carrier": s["carrier"], "tracking_number": s["tracking_number"],
             "status": s["status"], "shipped_at": _ts(s["shipped_at"]),
             "estimated_delivery": _ts(s["estimated_delivery"]),
             "delivered_at": _ts(s["delivered_at"]), "item_ids": s["item_ids"] or []}
            for s in kids["shipments"]
        ],
        "payments": [
            {"kind": p["kind"], "amount": _money(p["amount"]), "method": p["method"],
             "created_at": _ts(p["created_at"])}
            for p in kids["payments"]
        ],
        "returns": [
            {"kind": r["kind"], "status": r["status"], "reason": r["reason"],
             "item_ids": r["item_ids"] or [], "requested_at": _ts(r["requested_at"]),
             "refund_amount": _money(r["refund_amount"])}
            for r in kids["returns"]
        ],
    }


def _money(value: Decimal | None) -> float | None:
    # JSON numbers, like the other formats we read; two decimals survive float repr exactly.
    return None if value is None else float(Decimal(value).quantize(Decimal("0.01")))


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.replace(microsecond=0).isoformat()


def dumps(document: dict[str, Any]) -> str:
    """Serialise a store document the way ``chatbot kb export`` writes it."""
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"
