"""Storage models for a store's own data (SQLAlchemy 2.0 typed ORM).

Every row belongs to exactly one store (tenant). Source ids from the import file
(τ-bench customer ids, order numbers such as ``#W2611340``, Shopify handles) are
kept in ``source_id`` / ``number`` columns and are what shoppers and agents use.
Conversations and messages live in :mod:`chatbot.conversations.models` on the
same ``Base``.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chatbot.storage.clock import utcnow
from chatbot.storage.db import Base

Money = Numeric(12, 2)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class Store(Base):
    """A tenant: one online shop with its own widget key, origins and signing secret."""

    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # The public key the widget sends in ``hello``; not a secret.
    widget_key: Mapped[str] = mapped_column(String(100), unique=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    # Origins allowed to open the shopper socket; empty list means "any" (dev only).
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    # HMAC-SHA256 key the store's backend uses to sign customer identity tokens.
    identity_secret: Mapped[str] = mapped_column(String(200), default=new_secret)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("store_id", "source_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    product_type: Mapped[str] = mapped_column(String(100), default="")
    vendor: Mapped[str] = mapped_column(String(100), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    url: Mapped[str] = mapped_column(String(500), default="")
    # Option names in display order, e.g. ["color", "size"].
    option_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    variants: Mapped[list[Variant]] = relationship(
        back_populates="product", cascade="all, delete-orphan", order_by="Variant.id"
    )


class Variant(Base):
    __tablename__ = "variants"
    __table_args__ = (UniqueConstraint("store_id", "source_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    source_id: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str] = mapped_column(String(100), default="", index=True)
    title: Mapped[str] = mapped_column(String(300), default="")
    options: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    price: Mapped[Decimal] = mapped_column(Money)
    compare_at_price: Mapped[Decimal | None] = mapped_column(Money, default=None)
    available: Mapped[bool] = mapped_column(default=True)
    inventory: Mapped[int | None] = mapped_column(default=None)

    product: Mapped[Product] = relationship(back_populates="variants")


class Article(Base):
    """An FAQ entry or a policy page, written by the store."""

    __tablename__ = "articles"
    __table_args__ = (UniqueConstraint("store_id", "source_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="faq")  # "faq" | "policy"
    category: Mapped[str] = mapped_column(String(100), default="")
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(String(500), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("store_id", "source_id"),
        Index("ix_customers_store_email", "store_id", "email"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(300), default="")
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    phone: Mapped[str] = mapped_column(String(50), default="")
    address: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Saved payment methods as the source gave them (never full card numbers).
    payment_methods: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    orders: Mapped[list[Order]] = relationship(back_populates="customer", order_by="Order.id")

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (UniqueConstraint("store_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), index=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    number: Mapped[str] = mapped_column(String(100))  # e.g. "#W2611340" or "#1042"
    # pending | processed | shipped | delivered | cancelled | returned | return requested ...
    status: Mapped[str] = mapped_column(String(50))
    placed_at: Mapped[datetime | None] = mapped_column(default=None)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    subtotal: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    shipping_cost: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    total: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    email: Mapped[str] = mapped_column(String(300), default="")
    shipping_address: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Why the order was cancelled ("no longer needed", ...), set by the cancel action.
    cancel_reason: Mapped[str | None] = mapped_column(String(100), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    customer: Mapped[Customer | None] = relationship(back_populates="orders")
    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="OrderItem.id"
    )
    shipments: Mapped[list[Shipment]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="Shipment.id"
    )
    payments: Mapped[list[Payment]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="Payment.id"
    )
    returns: Mapped[list[Return]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="Return.id"
    )


class OrderItem(Base):
    __tablename__ = "order_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int | None] = mapped_column(
        ForeignKey("variants.id", ondelete="SET NULL"), default=None
    )
    product_source_id: Mapped[str] = mapped_column(String(100), default="")
    variant_source_id: Mapped[str] = mapped_column(String(100), default="")
    name: Mapped[str] = mapped_column(String(300))
    options: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    quantity: Mapped[int] = mapped_column(default=1)
    unit_price: Mapped[Decimal] = mapped_column(Money)
    # Where this line's units sit in the source's line list (τ-bench repeats a line per
    # unit, in any order): one 0-based position per unit, or [] when the order is ours.
    positions: Mapped[list[int]] = mapped_column(JSON, default=list)

    order: Mapped[Order] = relationship(back_populates="items")


class Shipment(Base):
    __tablename__ = "shipments"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    carrier: Mapped[str] = mapped_column(String(100), default="")
    tracking_number: Mapped[str] = mapped_column(String(100), default="", index=True)
    # label_created | in_transit | out_for_delivery | delivered | exception | returned
    status: Mapped[str] = mapped_column(String(50), default="label_created")
    shipped_at: Mapped[datetime | None] = mapped_column(default=None)
    estimated_delivery: Mapped[datetime | None] = mapped_column(default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    # Source ids of the variants in this parcel.
    item_ids: Mapped[list[str]] = mapped_column(JSON, default=list)

    order: Mapped[Order] = relationship(back_populates="shipments")


class Payment(Base):
    """A payment or a refund on an order."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20), default="payment")  # "payment" | "refund"
    amount: Mapped[Decimal] = mapped_column(Money)
    method: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime | None] = mapped_column(default=None)

    order: Mapped[Order] = relationship(back_populates="payments")


class Return(Base):
    __tablename__ = "returns"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    # requested | approved | received | refunded | rejected
    status: Mapped[str] = mapped_column(String(30), default="requested")
    kind: Mapped[str] = mapped_column(String(20), default="return")  # "return" | "exchange"
    reason: Mapped[str] = mapped_column(String(300), default="")
    item_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    requested_at: Mapped[datetime | None] = mapped_column(default=None)
    refund_amount: Mapped[Decimal | None] = mapped_column(Money, default=None)
    # Exchanges: the variants sent in exchange, in the same order as ``item_ids``.
    new_item_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The payment method refunded (returns) or charged/refunded the difference (exchanges).
    payment_method: Mapped[str] = mapped_column(String(100), default="")
    # Exchanges: new items' price minus the returned items' (negative: a refund).
    price_difference: Mapped[Decimal | None] = mapped_column(Money, default=None)

    order: Mapped[Order] = relationship(back_populates="returns")
