"""Read-only lookups the sockets need about a store and its customers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from knowledge_base.models import Customer
from knowledge_base.stores import find_store


@dataclass(frozen=True)
class StoreInfo:
    """The few store fields a socket checks, detached from the session."""

    id: int
    name: str
    widget_key: str
    title: str
    allowed_origins: tuple[str, ...]
    identity_secret: str


def find_store_info(session: Session, key: str) -> StoreInfo | None:
    """The store with this widget key (or name), or None."""
    store = find_store(session, key)
    if store is None:
        return None
    return StoreInfo(
        id=store.id,
        name=store.name,
        widget_key=store.widget_key,
        title=store.title,
        allowed_origins=tuple(store.allowed_origins or ()),
        identity_secret=store.identity_secret,
    )


def find_customer(session: Session, store_id: int, source_id: str) -> tuple[int, str] | None:
    """``(customer id, first name)`` of the store's customer ``source_id``, or None."""
    row = session.execute(
        select(Customer.id, Customer.first_name).where(
            Customer.store_id == store_id, Customer.source_id == source_id
        )
    ).first()
    return (row[0], row[1] or "") if row else None


class StoreLookup:
    """The shopper socket's two questions about a store, each one read on the database
    thread (through the ``run`` the server hands in)."""

    def __init__(self, run: Callable[..., Awaitable[Any]]) -> None:
        self._run = run

    async def store(self, key: str) -> StoreInfo | None:
        return await self._run(find_store_info, key)  # type: ignore[no-any-return]

    async def customer(self, store_id: int, source_id: str) -> tuple[int, str] | None:
        return await self._run(find_customer, store_id, source_id)  # type: ignore[no-any-return]
