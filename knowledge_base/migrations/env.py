"""Alembic environment: runs on the connection handed over by ``knowledge_base.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import chatbot.conversations.models  # noqa: F401  (conversation tables, revision 0002)
import chatbot.agents.models  # noqa: F401  (agents and console sessions, revision 0003)
import knowledge_base.models  # noqa: F401  (registers the tables)
from knowledge_base.db import Base

target_metadata = Base.metadata
config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
        with engine.begin() as conn:
            _run(conn)
    else:
        _run(connection)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
