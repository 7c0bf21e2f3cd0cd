"""Console sessions: login gives a random token; the database keeps only its SHA-256.

The token is 256 random bits, so a plain SHA-256 is enough to make a stolen
database useless for logging in (no need for a slow KDF here, unlike passwords).
Sessions have an absolute expiry; logout and password changes delete them.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from chatbot.agents.accounts import find_agent
from chatbot.agents.models import Agent, AgentSession
from chatbot.agents.passwords import hash_password, needs_rehash, verify_password
from chatbot.conversations.log import hash_token  # hex SHA-256, as for resume tokens
from chatbot.errors import AuthError
from chatbot.storage.clock import utcnow

log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(hours=12)
# last_seen_at is informational; writing it on every frame would be a write per message.
_TOUCH_EVERY = timedelta(minutes=1)
_MAX_TOKEN_CHARS = 200


@dataclass(frozen=True)
class LoginResult:
    """What a successful login hands back: the token (shown once) and its session."""

    token: str
    agent: Agent
    expires_at: datetime


def login(
    session: Session,
    email: str,
    password: str,
    *,
    ttl: timedelta = DEFAULT_TTL,
    user_agent: str = "",
    ip: str = "",
    now: datetime | None = None,
) -> LoginResult:
    """Check the password and open a session; raises ``AuthError`` (``invalid_credentials``).

    The same error (and roughly the same time) for an unknown email, a wrong password
    and a disabled account, so the answer reveals nothing about which emails exist.
    """
    agent = find_agent(session, email)
    ok = verify_password(agent.password_hash if agent else None, password)
    if agent is None or not ok or not agent.active:
        # Never log what was typed (it may be a password pasted into the email field).
        log.info("failed console login (%s) from %s",
                 f"agent {agent.id}" if agent else "unknown account", ip or "?")
        raise AuthError("wrong email or password", code="invalid_credentials")
    if needs_rehash(agent.password_hash):
        agent.password_hash = hash_password(password)
    return open_session(session, agent, ttl=ttl, user_agent=user_agent, ip=ip, now=now)


@dataclass(frozen=True)
class Credentials:
    """What a password check needs, read on the database thread (issue #18: the argon2
    check itself runs elsewhere, see :mod:`chatbot.security.login`)."""

    agent_id: int | None
    password_hash: str | None
    active: bool


def credentials(session: Session, email: str) -> Credentials:
    """The stored hash for ``email`` (``agent_id`` None when there is no such account)."""
    agent = find_agent(session, email)
    if agent is None:
        return Credentials(None, None, False)
    return Credentials(agent.id, agent.password_hash, agent.active)


def open_session(
    session: Session,
    agent: Agent | int,
    *,
    ttl: timedelta = DEFAULT_TTL,
    user_agent: str = "",
    ip: str = "",
    now: datetime | None = None,
    new_hash: str | None = None,
) -> LoginResult:
    """Open a session for an agent whose password was already checked."""
    if isinstance(agent, int):
        found = session.get(Agent, agent)
        if found is None or not found.active:
            raise AuthError("wrong email or password", code="invalid_credentials")
        agent = found
    if new_hash is not None:
        agent.password_hash = new_hash
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    expires_at = now + ttl
    session.add(
        AgentSession(
            agent_id=agent.id,
            token_hash=hash_token(token),
            created_at=now,
            expires_at=expires_at,
            last_seen_at=now,
            user_agent=user_agent[:300],
            ip=ip[:64],
        )
    )
    agent.last_login_at = now
    session.flush()
    log.info("agent %s logged in from %s", agent.email, ip or "?")
    return LoginResult(token=token, agent=agent, expires_at=expires_at)


def authenticate(session: Session, token: str | None, *, now: datetime | None = None) -> Agent:
    """The agent behind a session token; raises ``AuthError``.

    Codes: ``unauthorized`` (no token, unknown token, disabled agent) and
    ``session_expired`` (the session existed but its time is up; it is deleted).
    """
    if not token or len(token) > _MAX_TOKEN_CHARS:
        raise AuthError("log in first", code="unauthorized")
    now = now or utcnow()
    row = session.scalars(
        select(AgentSession)
        .where(AgentSession.token_hash == hash_token(token))
        .options(selectinload(AgentSession.agent).selectinload(Agent.store_links))
    ).first()
    if row is None:
        raise AuthError("log in first", code="unauthorized")
    if row.expires_at <= now:
        session.delete(row)
        session.flush()
        raise AuthError("your session has expired; log in again", code="session_expired")
    if not row.agent.active:
        raise AuthError("this account is disabled", code="unauthorized")
    if now - row.last_seen_at >= _TOUCH_EVERY:
        row.last_seen_at = now
        session.flush()
    return row.agent


def session_expires_at(session: Session, token: str) -> datetime | None:
    """When the session behind ``token`` ends, or ``None`` when there is no such session."""
    row = session.scalars(
        select(AgentSession).where(AgentSession.token_hash == hash_token(token))
    ).first()
    return None if row is None else row.expires_at


def logout(session: Session, token: str | None) -> bool:
    """End the session behind ``token``; ``True`` when there was one."""
    if not token or len(token) > _MAX_TOKEN_CHARS:
        return False
    result = session.execute(
        delete(AgentSession).where(AgentSession.token_hash == hash_token(token))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def purge_expired(session: Session, *, now: datetime | None = None) -> int:
    """Delete every expired session; returns how many went."""
    cutoff = now or utcnow()
    result = session.execute(delete(AgentSession).where(AgentSession.expires_at <= cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
