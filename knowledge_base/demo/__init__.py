"""The demo store shipped with the project: Northwind Outfitters (outdoor clothing and gear).

``store.json.gz`` is generated from the hand-written articles and catalogue plus a seeded
customer/order history (see :mod:`knowledge_base.demo.generate`). :func:`ensure_demo_store`
imports it into a database once; afterwards it only checks that the store is there.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

from sqlalchemy import func, select

from chatbot.errors import ChatbotError
from chatbot.storage.db import Database
from knowledge_base.models import Order, Store

log = logging.getLogger(__name__)

DEMO_STORE_NAME = "demo"
DEMO_WIDGET_KEY = "demo"
DEMO_STORE_FILE = Path(__file__).parent / "store.json.gz"


def shipped_data_version() -> str:
    """The content fingerprint of the shipped demo file (``settings.data_version``)."""
    doc = json.loads(gzip.decompress(DEMO_STORE_FILE.read_bytes()))
    return str(doc["store"]["settings"]["data_version"])


def ensure_demo_store(db: Database, *, progress: bool = False) -> Store:
    """The ``demo`` store, (re-)imported when it is missing, empty or from an older file."""
    with db.session() as session:
        store = session.scalars(select(Store).where(Store.name == DEMO_STORE_NAME)).first()
        if store is not None:
            has_orders = session.scalar(
                select(func.count()).select_from(Order).where(Order.store_id == store.id)
            )
            current = (store.settings or {}).get("data_version") == shipped_data_version()
            if has_orders and current:
                session.expunge(store)
                return store
    try:
        return import_demo_store(db, progress=progress)
    except ChatbotError:
        # Another process (a second server, `chatbot ask`) imported it at the same time and
        # won the race; a second pass finds its rows and only confirms them.
        log.info("demo store import raced with another process; retrying once")
        return import_demo_store(db, progress=progress)


def import_demo_store(db: Database, *, progress: bool = False) -> Store:
    """(Re-)import the shipped demo store; idempotent, like every import."""
    from knowledge_base.importers import import_data, json_format

    data = json_format.read(DEMO_STORE_FILE)
    summary = import_data(
        db, data, DEMO_STORE_NAME, source=str(DEMO_STORE_FILE), progress=progress,
        widget_key=DEMO_WIDGET_KEY,
    )
    log.info("demo store ready (%s)", "imported" if summary.changed else "unchanged")
    with db.session() as session:
        store = session.scalars(select(Store).where(Store.name == DEMO_STORE_NAME)).one()
        session.expunge(store)
        return store
