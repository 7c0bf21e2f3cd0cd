"""Order facts by SQL, always scoped to one store and one customer (or one proven order).

There is deliberately no "get order by number" here: every query carries the store id
and either the customer id or the email that proves a guest owns the order, so a
caller cannot leak another shopper's order by forgetting a filter.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from chatbot.errors import NotFoundError
from knowledge_base.models import Customer, Order

log = logging.getLogger(__name__)

# How many orders a customer lookup returns at most (newest first).
MAX_ORDERS = 50


_Query = TypeVar("_Query", bound=Select)  # type: ignore[type-arg]


def _with_details(query: _Query) -> _Query:
    # Load what fact lines need in a few queries, so callers can close the session.
    return query.options(
        selectinload(Order.items),
        selectinload(Order.shipments),
        selectinload(Order.payments),
        selectinload(Order.returns),
    )


def number_variants(number: str) -> list[str]:
    """The spellings an order number may be stored under: ``#W123``, ``W123``, any case."""
    core = number.strip().lstrip("#").strip()
    if not core:
        return []
    return list(dict.fromkeys([f"#{core}", core, f"#{core.upper()}", core.upper()]))


def _number_filter(number: str):  # type: ignore[no-untyped-def]
    variants = number_variants(number)
    return func.upper(Order.number).in_([v.upper() for v in variants])


def customer_orders(
    session: Session, store_id: int, customer_id: int, *, limit: int = MAX_ORDERS
) -> list[Order]:
    """The customer's own orders in this store, newest first, with items and shipments."""
    query = (
        select(Order)
        .where(Order.store_id == store_id, Order.customer_id == customer_id)
        .order_by(Order.placed_at.desc().nulls_last(), Order.id.desc())
        .limit(limit)
    )
    return list(session.scalars(_with_details(query)))


def order_for_customer(
    session: Session, store_id: int, customer_id: int, number: str
) -> Order | None:
    """The order with this number if it belongs to this customer in this store, else None.

    "Belongs to someone else" and "does not exist" are indistinguishable on purpose.
    """
    if not number_variants(number):
        return None
    query = select(Order).where(
        Order.store_id == store_id,
        Order.customer_id == customer_id,
        _number_filter(number),
    )
    return session.scalars(_with_details(query)).first()


def _same_email(a: str, b: str) -> bool:
    # Constant-time, so response timing says nothing about how close a guess was.
    return hmac.compare_digest(a.strip().lower().encode(), b.strip().lower().encode())


def verify_guest_order(session: Session, store_id: int, number: str, email: str) -> Order | None:
    """The order if ``email`` is the one on the order (or on its customer), else None.

    A wrong email and an unknown order number give the same ``None``.
    """
    if not email.strip() or not number_variants(number):
        return None
    query = (
        select(Order, Customer.email)
        .outerjoin(Customer, Customer.id == Order.customer_id)
        .where(Order.store_id == store_id, _number_filter(number))
    )
    for row in session.execute(_with_details(query)):
        order, customer_email = row[0], row[1]
        emails = [e for e in (order.email, customer_email or "") if e]
        if any(_same_email(email, known) for known in emails):
            return order
    log.info("guest verification failed for store %s", store_id)
    return None


def verified_guest_orders(session: Session, store_id: int, numbers: Sequence[str]) -> list[Order]:
    """Orders a guest already proved in this conversation (``AnswerRequest.verified_orders``).

    Only call this with numbers that came out of :func:`verify_guest_order`.
    """
    if not numbers:
        return []
    wanted = {v.upper() for n in numbers for v in number_variants(n)}
    query = select(Order).where(Order.store_id == store_id, func.upper(Order.number).in_(wanted))
    return list(session.scalars(_with_details(query)))


def find_customer(session: Session, store_id: int, ref: str) -> Customer:
    """A customer of this store by source id, then email, then database id; NotFoundError."""
    ref = ref.strip()
    conditions = [Customer.source_id == ref, func.lower(Customer.email) == ref.lower()]
    if ref.isdigit():
        conditions.append(Customer.id == int(ref))
    for condition in conditions:
        query = select(Customer).where(Customer.store_id == store_id, condition)
        customer = session.scalars(query).first()
        if customer is not None:
            return customer
    raise NotFoundError(f"no customer {ref!r} in this store")
