"""Team management for admins: the agent list and the changes an admin may make.

Used by ``chatbot agents list`` and by the console socket's admin messages. Every change
re-checks, in the same transaction, that the caller's session is live and an admin's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from chatbot.agents import accounts
from chatbot.agents.authz import Principal, authorize
from chatbot.errors import ChatbotError
from chatbot.protocol import agent as proto


def agent_rows(session: Session) -> list[dict[str, Any]]:
    """Every agent as a JSON-ready row: email, name, admin, active, stores, last login."""
    return [
        {
            "id": a.id,
            "email": a.email,
            "name": a.name,
            "admin": a.is_admin,
            "active": a.active,
            "stores": sorted(link.store.name for link in a.store_links),
            "last_login": a.last_login_at.isoformat(timespec="seconds") + "Z"
            if a.last_login_at
            else None,
        }
        for a in accounts.list_agents(session)
    ]


TeamAction = proto.ListAgents | proto.AddAgent | proto.RemoveAgent | proto.SetAgentStores


def apply(session: Session, token: str | None, action: TeamAction) -> list[dict[str, Any]]:
    """Check the caller is an admin, apply ``action``, and return the new agent list."""
    admin: Principal = authorize(session, token, admin=True)
    if isinstance(action, proto.AddAgent):
        accounts.add_agent(session, action.email, action.password, stores=action.stores,
                           is_admin=action.admin, name=action.name)
    elif isinstance(action, proto.RemoveAgent):
        if accounts.normalize_email(action.email) == admin.email:
            raise ChatbotError("you cannot remove your own account", code="not_allowed")
        accounts.remove_agent(session, action.email)
    elif isinstance(action, proto.SetAgentStores):
        agent = accounts.get_agent(session, action.email)
        have = {link.store.name for link in agent.store_links}
        accounts.revoke_stores(session, action.email, sorted(have - set(action.stores)))
        accounts.grant_stores(session, action.email, action.stores)
    session.expire_all()  # the list below must show the changes just flushed
    return agent_rows(session)
