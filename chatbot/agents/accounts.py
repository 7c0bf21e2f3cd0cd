"""The agent store: create, list, remove agents, change passwords and store access."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from chatbot.agents.models import Agent, AgentSession, AgentStore
from chatbot.agents.passwords import check_policy, hash_password
from chatbot.errors import ChatbotError, NotFoundError
from knowledge_base.models import Store
from knowledge_base.stores import get_store

log = logging.getLogger(__name__)

# Deliberately loose (RFC 5322 is not worth it): something@something.tld, no spaces.
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AgentExistsError(ChatbotError):
    code = "agent_exists"


def normalize_email(email: str) -> str:
    """Lower-cased, trimmed email; raises ``ChatbotError`` when it does not look like one."""
    value = email.strip().lower()
    if not _EMAIL_RE.match(value) or len(value) > 320:
        raise ChatbotError(f"invalid email address {email!r}", code="invalid_email")
    return value


def find_agent(session: Session, email: str) -> Agent | None:
    """The agent with this email (case-insensitive), or ``None``."""
    try:
        value = normalize_email(email)
    except ChatbotError:
        return None
    return session.scalars(
        select(Agent).where(Agent.email == value).options(selectinload(Agent.store_links))
    ).first()


def get_agent(session: Session, email: str) -> Agent:
    """The agent with this email; raises ``NotFoundError``."""
    agent = find_agent(session, email)
    if agent is None:
        raise NotFoundError(f"no agent with email {email!r}")
    return agent


def add_agent(
    session: Session,
    email: str,
    password: str,
    *,
    stores: Sequence[str] = (),
    is_admin: bool = False,
    name: str = "",
) -> Agent:
    """Create an agent with access to ``stores`` (names or widget keys).

    Raises ``AgentExistsError`` when the email is taken, ``StoreNotFoundError`` for an
    unknown store and ``WeakPasswordError`` for a password that fails the policy.
    """
    value = normalize_email(email)
    if find_agent(session, value) is not None:
        raise AgentExistsError(f"an agent with email {value!r} already exists")
    if not stores and not is_admin:
        raise ChatbotError("an agent needs at least one --store (or --admin)", code="no_store")
    check_policy(password, email=value)
    store_rows = [get_store(session, s) for s in stores]
    agent = Agent(email=value, name=name.strip(), password_hash=hash_password(password),
                  is_admin=is_admin, active=True)
    agent.store_links = [AgentStore(store_id=s.id) for s in _unique(store_rows)]
    session.add(agent)
    session.flush()
    log.info("added agent %s (admin=%s, stores=%s)", value, is_admin,
             ",".join(s.name for s in store_rows) or "-")
    return agent


def list_agents(session: Session) -> list[Agent]:
    """Every agent, by email, with their store links loaded."""
    return list(
        session.scalars(
            select(Agent).order_by(Agent.email).options(
                selectinload(Agent.store_links).selectinload(AgentStore.store)
            )
        )
    )


def remove_agent(session: Session, email: str) -> None:
    """Delete an agent and, with it, their store access and every session."""
    agent = get_agent(session, email)
    session.execute(delete(AgentSession).where(AgentSession.agent_id == agent.id))
    session.delete(agent)
    session.flush()
    log.info("removed agent %s", agent.email)


def set_password(session: Session, email: str, password: str) -> Agent:
    """Change an agent's password and end all their sessions (they log in again)."""
    agent = get_agent(session, email)
    check_policy(password, email=agent.email)
    agent.password_hash = hash_password(password)
    session.execute(delete(AgentSession).where(AgentSession.agent_id == agent.id))
    session.flush()
    log.info("changed password of agent %s; their sessions were ended", agent.email)
    return agent


def grant_stores(session: Session, email: str, stores: Iterable[str]) -> Agent:
    """Give an agent access to more stores (names or widget keys)."""
    agent = get_agent(session, email)
    have = {link.store_id for link in agent.store_links}
    for store in _unique(get_store(session, s) for s in stores):
        if store.id not in have:
            agent.store_links.append(AgentStore(store_id=store.id))
    session.flush()
    return agent


def revoke_stores(session: Session, email: str, stores: Iterable[str]) -> Agent:
    """Take away an agent's access to some stores."""
    agent = get_agent(session, email)
    drop = {get_store(session, s).id for s in stores}
    agent.store_links = [link for link in agent.store_links if link.store_id not in drop]
    session.flush()
    return agent


def store_ids_for(agent: Agent) -> set[int] | None:
    """The ids of the stores this agent may work in; ``None`` means every store (admin)."""
    if agent.is_admin:
        return None
    return {link.store_id for link in agent.store_links}


def accessible_stores(session: Session, agent: Agent) -> list[Store]:
    """The stores this agent may work in, by name."""
    ids = store_ids_for(agent)
    query = select(Store).order_by(Store.name)
    if ids is not None:
        query = query.where(Store.id.in_(ids))
    return list(session.scalars(query))


def _unique(stores: Iterable[Store]) -> list[Store]:
    seen: dict[int, Store] = {}
    for store in stores:
        seen.setdefault(store.id, store)
    return list(seen.values())


DEMO_AGENT_EMAIL = "demo-agent@northwind.example"


def ensure_demo_agent(session: Session, store: str) -> str | None:
    """Create the demo console account for ``store`` when missing.

    Returns the new random password, or ``None`` when the account already existed
    (its password is then whatever was set before: printed at creation or changed
    with ``chatbot agents passwd``).
    """
    if find_agent(session, DEMO_AGENT_EMAIL) is not None:
        return None
    password = secrets.token_urlsafe(12)
    add_agent(session, DEMO_AGENT_EMAIL, password, stores=[store], is_admin=True,
              name="Demo agent")
    return password
