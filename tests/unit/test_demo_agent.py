"""The demo console account: created once, with a password that actually logs in."""

from __future__ import annotations

from pathlib import Path

from chatbot.agents.accounts import DEMO_AGENT_EMAIL, ensure_demo_agent, find_agent
from chatbot.agents.passwords import verify_password
from chatbot.storage.db import Database, transaction
from knowledge_base.stores import get_or_create_store


def test_demo_agent_created_once_with_working_password(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with transaction(db.sessions) as session:
        get_or_create_store(session, "demo")
    with transaction(db.sessions) as session:
        password = ensure_demo_agent(session, "demo")
    assert password
    with transaction(db.sessions) as session:
        assert ensure_demo_agent(session, "demo") is None  # second start: unchanged
        agent = find_agent(session, DEMO_AGENT_EMAIL)
        assert agent is not None and agent.is_admin
        assert verify_password(agent.password_hash, password)
    db.dispose()
