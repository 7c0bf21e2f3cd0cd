"""Database engine, sessions and migrations (SQLite by default, any SQLAlchemy URL works).

``migrate()`` runs every Alembic revision in ``migrations/versions``: the store data, the
conversations, the agents and whatever else declares tables on :class:`Base`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Stable constraint names so Alembic migrations read the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base shared by every table of the project."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _private_file(path: Path) -> None:
    """Create the SQLite file owner-only (0600) and keep it so: it holds every store's
    identity secret and the agents' password hashes (issue #18). SQLite gives its -wal and
    -shm files the database file's mode."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with contextlib.suppress(OSError):
        if path.stat().st_uid == os.getuid():
            path.chmod(0o600)


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _private_file(Path(path))
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session, committed on success and rolled back on any error."""
    with factory() as session, session.begin():
        yield session


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """An engine plus its session factory; created once per process and passed around."""

    def __init__(self, url: str, *, run_migrations: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if run_migrations:
            migrate(self.engine)
        self.sessions = session_factory(self.engine)

    def session(self) -> Session:
        return self.sessions()

    def transaction(self) -> AbstractContextManager[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        return transaction(self.sessions)

    def dispose(self) -> None:
        self.engine.dispose()


def thread_runner(db: Database, executor: Executor | None) -> Callable[..., Awaitable[Any]]:
    """``run(fn, *args, **kwargs)``: ``fn(session, *args, **kwargs)`` in one transaction on
    ``executor``'s thread (None: the event loop's default pool), awaited from the loop.

    For a narrow service that reads away from the database thread: it is handed, uncalled,
    to one whose named methods are its only callers (the console login's read-only check,
    :meth:`chatbot.agents.services.TeamService.login_check`, on a thread of its own so a
    login never queues behind, or in front of, the chat's writes).
    """

    async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            with transaction(db.sessions) as session:
                return fn(session, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(executor, call)

    return run
