"""Store (tenant) lookup and creation, by name or by public widget key."""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from chatbot.errors import ChatbotError, StoreNotFoundError
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

# Store names end up in CLI flags, URLs and index folder names: keep them boring.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def validate_store_name(name: str) -> str:
    """Return ``name`` if it is a usable store name, else raise ``ChatbotError``."""
    if not _NAME_RE.match(name):
        raise ChatbotError(
            f"invalid store name {name!r}: use 1-100 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit",
            code="invalid_store_name",
        )
    return name


def find_store(session: Session, name_or_key: str) -> Store | None:
    """The store called ``name_or_key``, else the one with that widget key, else ``None``."""
    by_name = session.scalars(select(Store).where(Store.name == name_or_key)).first()
    if by_name is not None:
        return by_name
    return session.scalars(select(Store).where(Store.widget_key == name_or_key)).first()


def get_store(session: Session, name_or_key: str) -> Store:
    """The store with this name (checked first) or widget key; raises StoreNotFoundError."""
    store = find_store(session, name_or_key)
    if store is None:
        raise StoreNotFoundError(f"unknown store {name_or_key!r}")
    return store


def get_or_create_store(
    session: Session, name: str, *, title: str = "", widget_key: str | None = None
) -> Store:
    """The store called ``name``, created (and flushed) when missing.

    ``widget_key`` defaults to the name. An existing store is returned as it is: its
    title and key are not overwritten, so re-running an import never changes them.
    """
    existing = session.scalars(select(Store).where(Store.name == name)).first()
    if existing is not None:
        return existing
    validate_store_name(name)
    key = widget_key or name
    clash = session.scalars(
        select(Store).where(or_(Store.widget_key == key, Store.name == key))
    ).first()
    if clash is not None:
        raise ChatbotError(
            f"widget key {key!r} is already used by store {clash.name!r}",
            code="widget_key_taken",
        )
    store = Store(name=name, widget_key=key, title=title or name, allowed_origins=[], settings={})
    session.add(store)
    session.flush()
    log.info("created store %s (widget key %s)", name, key)
    return store


def list_stores(session: Session) -> list[Store]:
    """Every store, by name."""
    return list(session.scalars(select(Store).order_by(Store.name)))


def store_stats(session: Session, store: Store) -> dict[str, Any]:
    """Row counts for one store: what ``chatbot kb stats`` prints."""
    sid = store.id
    order_ids = select(Order.id).where(Order.store_id == sid).scalar_subquery()

    def count(model: type[Any], *where: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    def grouped(column: Any, model: type[Any], *where: Any) -> dict[str, int]:
        rows = session.execute(
            select(column, func.count()).select_from(model).where(*where).group_by(column)
        ).all()
        return {str(key): int(n) for key, n in sorted(rows, key=lambda r: (-r[1], str(r[0])))}

    return {
        "store": store.name,
        "title": store.title,
        "widget_key": store.widget_key,
        "customers": count(Customer, Customer.store_id == sid),
        "orders": count(Order, Order.store_id == sid),
        "orders_by_status": grouped(Order.status, Order, Order.store_id == sid),
        "order_items": count(OrderItem, OrderItem.order_id.in_(order_ids)),
        "products": count(Product, Product.store_id == sid),
        "variants": count(Variant, Variant.store_id == sid),
        "variants_available": count(Variant, Variant.store_id == sid, Variant.available.is_(True)),
        "articles": count(Article, Article.store_id == sid),
        "articles_by_kind": grouped(Article.kind, Article, Article.store_id == sid),
        "shipments": count(Shipment, Shipment.order_id.in_(order_ids)),
        "shipments_by_status": grouped(Shipment.status, Shipment, Shipment.order_id.in_(order_ids)),
        "payments": count(Payment, Payment.order_id.in_(order_ids), Payment.kind == "payment"),
        "refunds": count(Payment, Payment.order_id.in_(order_ids), Payment.kind == "refund"),
        "returns": count(Return, Return.order_id.in_(order_ids)),
        "returns_by_status": grouped(Return.status, Return, Return.order_id.in_(order_ids)),
    }
