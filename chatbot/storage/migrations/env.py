"""Alembic environment: runs on the connection handed over by ``chatbot.storage.db.migrate``.

Upgrades run the revision scripts in ``versions/`` and need no table classes, so this file
imports no domain package (storage sits below all of them). Only ``alembic revision
--autogenerate`` compares against the tables, and loads the modules that declare them
(``MODEL_MODULES``) by name first.
"""

from __future__ import annotations

import importlib

from alembic import context
from sqlalchemy import create_engine

from chatbot.storage.db import Base

# Every module that declares tables on ``Base`` (autogenerate only).
MODEL_MODULES = (
    "knowledge_base.models",  # store data, revision 0001
    "chatbot.conversations.models",  # conversation tables, revision 0002
    "chatbot.agents.models",  # agents and console sessions, revision 0003
    "chatbot.security.models",  # failure throttles and lockouts, revision 0005
    "chatbot.actions.models",  # order action proposals and audit, revision 0006
)

target_metadata = Base.metadata
config = context.config


def run_migrations_online() -> None:
    if getattr(config.cmd_opts, "autogenerate", False):
        for name in MODEL_MODULES:
            importlib.import_module(name)
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
