"""Upsert validated :class:`StoreData` into one store, in the caller's transaction.

Rows are matched by their source ids (``source_id``; ``number`` for orders), compared
field by field, and written with bulk INSERT/UPDATE statements so that a 1,000-order
import takes well under a second. An order's items, shipments, payments and returns have
no ids of their own: they are compared as a list and replaced together when they differ.
Rows that are no longer in the file are left alone.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session
from tqdm import tqdm

from chatbot.errors import ImportFileError
from knowledge_base.importers.records import CENT, ImportSummary, StoreData
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

ARTICLE_FIELDS = ("kind", "category", "title", "body", "url")
PRODUCT_FIELDS = ("title", "description", "product_type", "vendor", "tags", "url", "option_names")
VARIANT_FIELDS = (
    "product_id", "sku", "title", "options", "price", "compare_at_price", "available", "inventory",
)
CUSTOMER_FIELDS = ("email", "first_name", "last_name", "phone", "address", "payment_methods")
ORDER_FIELDS = (
    "customer_id", "status", "placed_at", "currency", "subtotal", "shipping_cost", "total",
    "email", "shipping_address", "cancel_reason",
)
ITEM_FIELDS = (
    "variant_id", "product_source_id", "variant_source_id", "name", "options", "quantity",
    "unit_price", "positions",
)
SHIPMENT_FIELDS = (
    "carrier", "tracking_number", "status", "shipped_at", "estimated_delivery", "delivered_at",
    "item_ids",
)
PAYMENT_FIELDS = ("kind", "amount", "method", "created_at")
RETURN_FIELDS = (
    "status", "kind", "reason", "item_ids", "requested_at", "refund_amount", "new_item_ids",
    "payment_method", "price_difference",
)

# Fields an importer may leave out (added after the first formats were written).
OPTIONAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "orders": {"cancel_reason": None},
    "items": {"positions": []},
    "returns": {"new_item_ids": [], "payment_method": "", "price_difference": None},
}

# (key in the order record, model, compared fields)
ORDER_CHILDREN: tuple[tuple[str, type[Any], tuple[str, ...]], ...] = (
    ("items", OrderItem, ITEM_FIELDS),
    ("shipments", Shipment, SHIPMENT_FIELDS),
    ("payments", Payment, PAYMENT_FIELDS),
    ("returns", Return, RETURN_FIELDS),
)

# Bound parameters per statement stay well under SQLite's and psycopg's limits.
_CHUNK = 500


def write_store_data(
    session: Session, store: Store, data: StoreData, *, path: str, progress: bool = False,
    new_store: bool = False,
) -> ImportSummary:
    """Create or update every record of ``data`` in ``store``; returns the counts."""
    summary = ImportSummary(store=store.name)
    counts = data.counts()
    total = sum(counts.values())
    with tqdm(total=total, disable=not progress, unit="rec", desc=f"import {store.name}") as bar:
        _apply_meta(store, data.meta, summary, new_store=new_store)
        session.flush()
        _upsert(session, Article, store.id, data.articles, ARTICLE_FIELDS, "articles", summary)
        bar.update(counts["articles"])
        product_ids = _upsert(
            session, Product, store.id, data.products, PRODUCT_FIELDS, "products", summary
        )
        bar.update(counts["products"])
        variants = [
            {**v, "product_id": product_ids[p["source_id"]]}
            for p in data.products
            for v in p["variants"]
        ]
        variant_ids = _upsert(
            session, Variant, store.id, variants, VARIANT_FIELDS, "variants", summary
        )
        bar.update(counts["variants"])
        customer_ids = _upsert(
            session, Customer, store.id, data.customers, CUSTOMER_FIELDS, "customers", summary
        )
        bar.update(counts["customers"])
        _upsert_orders(session, store.id, data.orders, customer_ids, variant_ids, summary, path)
        bar.update(counts["orders"])
    log.debug(
        "import into %s: created %s, updated %s, unchanged %s",
        store.name, dict(summary.created), dict(summary.updated), dict(summary.unchanged),
    )
    return summary


def _apply_meta(store: Store, meta: dict[str, Any], summary: ImportSummary, *,
                new_store: bool) -> None:
    """Apply the file's store fields: title and currency as given, settings merged key by key.

    ``setting_defaults`` are what a format implies (the τ format: how its policy identifies
    shoppers); they fill settings the store does not have yet and never replace one that an
    operator set. Allowed origins are a security setting: a file may set them on a new store
    or narrow them, but an empty list (meaning "any origin") never widens an existing store's
    list.
    """
    wanted: dict[str, Any] = {}
    for key in ("title", "currency"):
        if key in meta:
            wanted[key] = meta[key]
    if "settings" in meta or "setting_defaults" in meta:
        wanted["settings"] = {**meta.get("setting_defaults", {}), **(store.settings or {}),
                              **meta.get("settings", {})}
    if "allowed_origins" in meta and (new_store or meta["allowed_origins"]):
        wanted["allowed_origins"] = list(meta["allowed_origins"])
    changed = False
    for key, value in wanted.items():
        if getattr(store, key) != value:
            setattr(store, key, value)
            changed = True
    if changed and not new_store:
        summary.updated["store"] += 1


def _norm(value: Any) -> Any:
    """A comparable form: money as cents, so 49.9 and Decimal('49.90') are equal."""
    if isinstance(value, Decimal):
        return value.quantize(CENT)
    if isinstance(value, float):
        return Decimal(str(value)).quantize(CENT)
    return value


def _row_fields(model: type[Any], fields: tuple[str, ...], row: dict[str, Any]) -> tuple[str, ...]:
    # A customer's created_at is compared only when the file carries one; otherwise the
    # stored value (or the insert default) stays.
    if model is Customer and row.get("created_at") is not None:
        return (*fields, "created_at")
    return fields


def _upsert(
    session: Session,
    model: type[Any],
    store_id: int,
    rows: Sequence[dict[str, Any]],
    fields: tuple[str, ...],
    entity: str,
    summary: ImportSummary,
    key: str = "source_id",
) -> dict[str, int]:
    """Insert new rows, update changed ones; returns ``{source id: row id}`` for the store."""
    table = model.__table__
    compare = (*fields, "created_at") if model is Customer else fields
    existing: dict[str, dict[str, Any]] = {
        row[key]: dict(row)
        for row in session.execute(
            select(table.c.id, table.c[key], *(table.c[f] for f in compare)).where(
                table.c.store_id == store_id
            )
        ).mappings()
    }
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row in rows:
        used = _row_fields(model, fields, row)
        values = {f: row[f] for f in used}
        old = existing.get(row[key])
        if old is None:
            inserts.append({"store_id": store_id, key: row[key], **values})
        elif any(_norm(old[f]) != _norm(values[f]) for f in used):
            updates.append({"id": old["id"], **values})
        else:
            summary.unchanged[entity] += 1
    for group in _uniform(inserts):
        for chunk in _chunks(group):
            session.execute(insert(model), chunk)
    for group in _uniform(updates):
        for chunk in _chunks(group):
            session.execute(update(model), chunk)
    summary.created[entity] += len(inserts)
    summary.updated[entity] += len(updates)
    if not inserts:
        return {k: v["id"] for k, v in existing.items()}
    return dict(
        session.execute(select(table.c[key], table.c.id).where(table.c.store_id == store_id))
        .all()
    )


def _upsert_orders(
    session: Session,
    store_id: int,
    orders: Sequence[dict[str, Any]],
    customer_ids: dict[str, int],
    variant_ids: dict[str, int],
    summary: ImportSummary,
    path: str,
) -> None:
    """Upsert orders by number; an order counts as updated when its row or children differ."""
    table = Order.__table__
    existing: dict[str, dict[str, Any]] = {
        row["number"]: dict(row)
        for row in session.execute(
            select(table.c.id, table.c.number, *(table.c[f] for f in ORDER_FIELDS)).where(
                table.c.store_id == store_id
            )
        ).mappings()
    }
    children = _load_children(session, store_id) if existing else {}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    replace: list[int] = []
    fresh: list[dict[str, Any]] = []  # orders whose children are (re)inserted
    for order in orders:
        _fill_defaults(order)
        customer = order.get("customer")
        if customer is not None and customer not in customer_ids:
            raise ImportFileError(
                path, f"order {order['number']}", f"unknown customer {customer!r}"
            )
        for item in order["items"]:
            item["variant_id"] = variant_ids.get(item["variant_source_id"])
        values = {f: order[f] for f in ORDER_FIELDS if f != "customer_id"}
        values["customer_id"] = customer_ids[customer] if customer is not None else None
        old = existing.get(order["number"])
        if old is None:
            inserts.append({"store_id": store_id, "number": order["number"], **values})
            fresh.append(order)
            continue
        row_changed = any(_norm(old[f]) != _norm(values[f]) for f in ORDER_FIELDS)
        kids_changed = any(
            children[name].get(old["id"], [])
            != [tuple(_norm(child[f]) for f in fields) for child in order[name]]
            for name, _model, fields in ORDER_CHILDREN
        )
        if row_changed:
            updates.append({"id": old["id"], **values})
        if kids_changed:
            replace.append(old["id"])
            fresh.append(order)
        if row_changed or kids_changed:
            summary.updated["orders"] += 1
        else:
            summary.unchanged["orders"] += 1
    summary.created["orders"] += len(inserts)

    for chunk in _chunks(inserts):
        session.execute(insert(Order), chunk)
    for chunk in _chunks(updates):
        session.execute(update(Order), chunk)
    for chunk in _chunks(replace):
        for _name, model, _fields in ORDER_CHILDREN:
            session.execute(delete(model).where(model.order_id.in_(chunk)))
    if not fresh:
        return
    order_ids = dict(
        session.execute(select(table.c.number, table.c.id).where(table.c.store_id == store_id))
        .all()
    )
    for name, model, fields in ORDER_CHILDREN:
        rows = [
            {"order_id": order_ids[order["number"]], **{f: child[f] for f in fields}}
            for order in fresh
            for child in order[name]
        ]
        for chunk in _chunks(rows):
            session.execute(insert(model), chunk)


def _fill_defaults(order: dict[str, Any]) -> None:
    for key, value in OPTIONAL_DEFAULTS["orders"].items():
        order.setdefault(key, value)
    for name in ("items", "returns"):
        for child in order[name]:
            for key, value in OPTIONAL_DEFAULTS[name].items():
                child.setdefault(key, list(value) if isinstance(value, list) else value)


def _load_children(session: Session, store_id: int) -> dict[str, dict[int, list[tuple[Any, ...]]]]:
    """The store's order children as comparable tuples, grouped by order id, in id order."""
    orders = Order.__table__
    out: dict[str, dict[int, list[tuple[Any, ...]]]] = {}
    for name, model, fields in ORDER_CHILDREN:
        table = model.__table__
        grouped: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        stmt = (
            select(table.c.order_id, *(table.c[f] for f in fields))
            .join(orders, orders.c.id == table.c.order_id)
            .where(orders.c.store_id == store_id)
            .order_by(table.c.id)
        )
        for row in session.execute(stmt):
            grouped[row[0]].append(tuple(_norm(v) for v in row[1:]))
        out[name] = grouped
    return out


def _uniform(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """Split rows into groups with identical keys (executemany needs one parameter shape)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row)].append(row)
    return groups.values()


def _chunks(rows: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]
