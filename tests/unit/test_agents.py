"""Agent accounts, argon2id passwords, hashed session tokens and store authorisation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from chatbot.agents import accounts, authz, sessions
from chatbot.agents.models import Agent, AgentSession
from chatbot.agents.passwords import (
    WeakPasswordError,
    check_policy,
    hash_password,
    needs_rehash,
    verify_password,
)
from chatbot.errors import AuthError, ChatbotError, NotFoundError, StoreNotFoundError
from chatbot.storage.clock import utcnow
from chatbot.storage.db import Database
from knowledge_base.stores import get_or_create_store

PASSWORD = "correct horse battery"


@pytest.fixture()
def db(tmp_path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'agents.db'}")
    with database.transaction() as s:
        get_or_create_store(s, "demo")
        get_or_create_store(s, "other")
    yield database
    database.dispose()


@pytest.fixture()
def session(db: Database) -> Iterator[Session]:
    with db.transaction() as s:
        yield s


def test_password_hash_is_argon2id_salted_and_verifies() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("$argon2id$")
    assert first != second  # fresh salt each time
    assert verify_password(first, PASSWORD)
    assert not verify_password(first, PASSWORD + "!")
    assert not verify_password(None, PASSWORD)  # unknown account
    assert not verify_password("not a hash", PASSWORD)
    assert not needs_rehash(first)
    assert needs_rehash("garbage")


@pytest.mark.parametrize(
    "bad", ["short", " leading space pass", "aaaaaaaaaaaaaa", "x" * 2000, "ana@shop.example"]
)
def test_weak_passwords_are_refused(bad: str) -> None:
    with pytest.raises(WeakPasswordError):
        check_policy(bad, email="ana@shop.example")


def test_add_list_remove(session: Session) -> None:
    agent = accounts.add_agent(
        session, "  Ana@Shop.Example ", PASSWORD, stores=["demo"], name="Ana"
    )
    assert agent.email == "ana@shop.example"
    assert agent.password_hash != PASSWORD and agent.password_hash.startswith("$argon2id$")
    with pytest.raises(accounts.AgentExistsError):
        accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"])
    with pytest.raises(StoreNotFoundError):
        accounts.add_agent(session, "bob@shop.example", PASSWORD, stores=["nope"])
    with pytest.raises(ChatbotError, match="invalid email"):
        accounts.add_agent(session, "not-an-email", PASSWORD, stores=["demo"])
    with pytest.raises(ChatbotError, match="at least one --store"):
        accounts.add_agent(session, "bob@shop.example", PASSWORD)
    accounts.add_agent(session, "boss@shop.example", PASSWORD, is_admin=True)
    listed = accounts.list_agents(session)
    assert [a.email for a in listed] == ["ana@shop.example", "boss@shop.example"]
    assert [link.store.name for link in listed[0].store_links] == ["demo"]
    accounts.remove_agent(session, "ANA@shop.example")
    assert accounts.find_agent(session, "ana@shop.example") is None
    with pytest.raises(NotFoundError):
        accounts.remove_agent(session, "ana@shop.example")


def test_login_stores_only_the_token_hash(session: Session) -> None:
    accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"])
    result = sessions.login(session, "ANA@shop.example", PASSWORD, ip="10.0.0.1")
    assert len(result.token) >= 40
    stored = session.scalars(select(AgentSession)).one()
    assert stored.token_hash == sessions.hash_token(result.token)
    raw = session.execute(text("SELECT * FROM agent_sessions")).all()
    assert result.token not in repr(raw)
    assert sessions.authenticate(session, result.token).email == "ana@shop.example"


@pytest.mark.parametrize(
    ("email", "password"),
    [("ana@shop.example", "wrong password!"), ("nobody@shop.example", PASSWORD)],
)
def test_bad_credentials_give_one_error(session: Session, email: str, password: str) -> None:
    accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"])
    with pytest.raises(AuthError) as info:
        sessions.login(session, email, password)
    assert info.value.code == "invalid_credentials"
    assert session.scalars(select(AgentSession)).first() is None


def test_disabled_agent_cannot_log_in_or_use_a_session(session: Session) -> None:
    agent = accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"])
    token = sessions.login(session, "ana@shop.example", PASSWORD).token
    agent.active = False
    session.flush()
    with pytest.raises(AuthError):
        sessions.login(session, "ana@shop.example", PASSWORD)
    with pytest.raises(AuthError):
        sessions.authenticate(session, token)


def test_expiry_and_logout(session: Session) -> None:
    accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"])
    now = utcnow()
    token = sessions.login(session, "ana@shop.example", PASSWORD, ttl=timedelta(minutes=5),
                           now=now).token
    assert sessions.authenticate(session, token, now=now + timedelta(minutes=4))
    with pytest.raises(AuthError) as info:
        sessions.authenticate(session, token, now=now + timedelta(minutes=5))
    assert info.value.code == "session_expired"
    # The expired row is gone: the next try is a plain "unauthorized".
    with pytest.raises(AuthError) as again:
        sessions.authenticate(session, token, now=now)
    assert again.value.code == "unauthorized"

    token = sessions.login(session, "ana@shop.example", PASSWORD).token
    assert sessions.logout(session, token)
    assert not sessions.logout(session, token)
    with pytest.raises(AuthError):
        sessions.authenticate(session, token)
    for missing in (None, "", "x" * 500, "made-up-token"):
        with pytest.raises(AuthError):
            sessions.authenticate(session, missing)


def test_purge_expired(session: Session) -> None:
    accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"])
    now = utcnow()
    sessions.login(session, "ana@shop.example", PASSWORD, ttl=timedelta(seconds=1), now=now)
    keep = sessions.login(session, "ana@shop.example", PASSWORD, now=now).token
    assert sessions.purge_expired(session, now=now + timedelta(seconds=2)) == 1
    assert sessions.authenticate(session, keep, now=now)


def test_password_change_ends_sessions(session: Session) -> None:
    accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"])
    token = sessions.login(session, "ana@shop.example", PASSWORD).token
    accounts.set_password(session, "ana@shop.example", "a brand new passphrase")
    with pytest.raises(AuthError):
        sessions.authenticate(session, token)
    with pytest.raises(AuthError):
        sessions.login(session, "ana@shop.example", PASSWORD)
    assert sessions.login(session, "ana@shop.example", "a brand new passphrase").token


def test_store_access_and_admin(session: Session) -> None:
    demo = get_or_create_store(session, "demo")
    other = get_or_create_store(session, "other")
    accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"])
    accounts.add_agent(session, "boss@shop.example", PASSWORD, is_admin=True)
    ana = sessions.login(session, "ana@shop.example", PASSWORD).token
    boss = sessions.login(session, "boss@shop.example", PASSWORD).token

    assert authz.authorize(session, ana, store_id=demo.id).email == "ana@shop.example"
    with pytest.raises(AuthError) as info:
        authz.authorize(session, ana, store_id=other.id)
    assert info.value.code == "forbidden"
    with pytest.raises(AuthError):
        authz.authorize(session, ana, admin=True)
    principal = authz.authorize(session, boss, store_id=other.id, admin=True)
    assert principal.store_ids is None

    accounts.grant_stores(session, "ana@shop.example", ["other"])
    assert authz.authorize(session, ana, store_id=other.id)
    accounts.revoke_stores(session, "ana@shop.example", ["demo"])
    with pytest.raises(AuthError):
        authz.authorize(session, ana, store_id=demo.id)
    assert [s.name for s in accounts.accessible_stores(session, session.get(Agent, 1))] == [
        "other"
    ]


def test_migrations_match_the_agent_models(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from chatbot.agents import models
    from chatbot.storage.db import Base

    ours = {t for t in Base.metadata.tables if t.startswith("agent")}
    assert ours == {"agents", "agent_stores", "agent_sessions", "agent_reads"}
    assert models.Agent.__tablename__ in ours
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if "agent" in repr(d)] == []
