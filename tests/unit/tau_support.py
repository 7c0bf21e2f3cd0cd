"""The τ-bench retail data the action tests run on, and small readers of its state.

``tests/unit/conftest.py`` builds the fixtures from it (``tau_replayer``: one import of
the τ folder per test session; ``tau_db``: a fresh copy of it per test), so the action
tests and the conversation tests share one set instead of copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from chatbot.actions.tau import STORE, export_state
from chatbot.storage.db import Database
from knowledge_base.models import Customer, Store

REPO = Path(__file__).resolve().parents[2]
TAU = REPO.parent / "shared" / "datasets" / "tau_retail"

# Every test module on the τ store carries this mark (the data lives outside the repo).
needs_tau = pytest.mark.skipif(not (TAU / "orders.json").exists(), reason="no ../shared τ data")


def store_id(db: Database, name: str = STORE) -> int:
    """The id of the τ store (or the store ``name``) in ``db``."""
    with db.session() as s:
        found = s.scalar(select(Store.id).where(Store.name == name))
        assert found is not None, f"no store {name!r}"
        return int(found)


def ids(db: Database, customer: str) -> tuple[int, int]:
    """(store id, customer id) of a τ user id such as ``harper_kovacs_8617``."""
    with db.session() as s:
        customer_id = s.scalar(select(Customer.id).where(Customer.source_id == customer))
        assert customer_id is not None, f"no customer {customer!r}"
    return store_id(db), int(customer_id)


def order_state(db: Database, number: str) -> dict[str, Any]:
    """Order ``number`` as τ-bench's orders.json holds it, read back from ``db``."""
    return export_state(db)["orders"][number]


def user_state(db: Database, user: str) -> dict[str, Any]:
    """User ``user`` as τ-bench's users.json holds it, read back from ``db``."""
    return export_state(db)["users"][user]
