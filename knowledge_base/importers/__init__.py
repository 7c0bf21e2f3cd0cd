"""Importers, one module per source format, behind one registry.

Every importer reads and validates its whole input into :class:`StoreData` first, then
:func:`import_path` writes it in a single transaction, so a broken file leaves the store
exactly as it was. Re-importing the same file changes nothing (rows are matched by their
source ids).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import IntegrityError, OperationalError

from chatbot.errors import ChatbotError
from chatbot.storage.db import Database, transaction
from knowledge_base.importers.records import ImportSummary, StoreData
from knowledge_base.importers.writer import write_store_data
from knowledge_base.stores import find_store, get_or_create_store

log = logging.getLogger(__name__)

Reader = Callable[[Path], StoreData]

# format name -> "module:function"; modules load on use.
FORMATS: dict[str, str] = {
    "json": "knowledge_base.importers.json_format:read",
    "tau-retail": "knowledge_base.importers.tau_retail:read",
    "shopify-csv": "knowledge_base.importers.shopify_csv:read",
}

__all__ = ["FORMATS", "ImportSummary", "StoreData", "get_reader", "import_data", "import_path"]


def get_reader(fmt: str) -> Reader:
    """The parse-and-validate function of a format; raises ChatbotError for unknown ones."""
    target = FORMATS.get(fmt)
    if target is None:
        raise ChatbotError(
            f"unknown import format {fmt!r} (choose from {', '.join(FORMATS)})",
            code="unknown_format",
        )
    module_name, attr = target.split(":")
    reader: Reader = getattr(importlib.import_module(module_name), attr)
    return reader


def import_data(
    db: Database, data: StoreData, store_name: str, *, source: str, progress: bool = False,
    widget_key: str | None = None,
) -> ImportSummary:
    """Write already-validated data into ``store_name`` (created if missing), in one transaction."""
    try:
        with transaction(db.sessions) as session:
            new_store = find_store(session, store_name) is None
            store = get_or_create_store(
                session, store_name, title=data.meta.get("title", ""), widget_key=widget_key
            )
            return write_store_data(
                session, store, data, path=source, progress=progress, new_store=new_store
            )
    except (IntegrityError, OperationalError) as exc:
        # Validation catches duplicates inside a file; this is a concurrent writer (or a
        # locked/unreachable database). The transaction was rolled back either way.
        raise ChatbotError(
            f"{source}: the database refused the import, nothing was changed ({exc.orig})",
            code="import_error",
        ) from exc


def import_path(
    db: Database, fmt: str, path: Path, store_name: str, *, progress: bool = False
) -> ImportSummary:
    """Parse ``path`` as ``fmt`` and upsert it into ``store_name``; all or nothing."""
    started = time.perf_counter()
    data = get_reader(fmt)(Path(path))
    parsed = time.perf_counter()
    summary = import_data(db, data, store_name, source=str(path), progress=progress)
    log.info(
        "imported %s (%s) into %s: parse %.2fs, write %.2fs",
        path, fmt, store_name, parsed - started, time.perf_counter() - parsed,
    )
    return summary
