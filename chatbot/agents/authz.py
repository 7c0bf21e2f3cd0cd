"""Authorisation for console actions: who may see and act on which store's conversations.

The console socket calls :func:`authorize` before every action with the session token
it was opened with, so a logout, an expired session, a removed agent or a revoked
store takes effect on the next frame, not on the next connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from chatbot.agents.accounts import store_ids_for
from chatbot.agents.models import Agent
from chatbot.agents.sessions import authenticate
from chatbot.errors import AuthError


@dataclass(frozen=True)
class Principal:
    """A snapshot of an authenticated agent, safe to keep outside a database session."""

    agent_id: int
    email: str
    name: str
    is_admin: bool
    # None: every store (admins).
    store_ids: frozenset[int] | None

    @classmethod
    def of(cls, agent: Agent) -> Principal:
        ids = store_ids_for(agent)
        return cls(
            agent_id=agent.id,
            email=agent.email,
            name=agent.display_name,
            is_admin=agent.is_admin,
            store_ids=None if ids is None else frozenset(ids),
        )

    def can_access(self, store_id: int) -> bool:
        return self.store_ids is None or store_id in self.store_ids

    def as_json(self) -> dict[str, Any]:
        """Who is signed in, as the console's ``ready`` and ``/console/session`` show it."""
        return {"id": self.agent_id, "email": self.email, "name": self.name,
                "admin": self.is_admin}


def require_store(principal: Principal, store_id: int) -> None:
    """Raise ``AuthError`` (``forbidden``) unless the agent works in this store."""
    if not principal.can_access(store_id):
        raise AuthError("you do not have access to this store", code="forbidden")


def require_admin(principal: Principal) -> None:
    """Raise ``AuthError`` (``forbidden``) unless the agent is an admin."""
    if not principal.is_admin:
        raise AuthError("only admins can manage agents", code="forbidden")


def authorize(
    session: Session,
    token: str | None,
    *,
    store_id: int | None = None,
    admin: bool = False,
    now: datetime | None = None,
) -> Principal:
    """Check the session (and store access / admin rights when asked); return who it is."""
    principal = Principal.of(authenticate(session, token, now=now))
    if store_id is not None:
        require_store(principal, store_id)
    if admin:
        require_admin(principal)
    return principal
