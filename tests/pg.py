"""Throwaway PostgreSQL databases for the tests that run against PostgreSQL too."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def throwaway_pg_database() -> Iterator[str]:
    """Create a fresh database, yield its SQLAlchemy URL, drop it afterwards.

    Connects to ``$CHATBOT_TEST_PG_URL`` (default: the local ``test`` database) only to
    create and drop; the test itself never touches that database. Skips the test when
    PostgreSQL is unreachable.
    """
    psycopg = pytest.importorskip("psycopg")
    base = os.environ.get("CHATBOT_TEST_PG_URL", DEFAULT_ADMIN_URL)
    base = base.replace("postgresql+psycopg://", "postgresql://")
    name = f"chatbot_t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no PG here"
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
