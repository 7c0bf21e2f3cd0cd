"""The console's narrow services: the inbox and the team, one method per question.

Each method runs one transaction in the database thread (through the ``run`` the server
hands in: :meth:`~chatbot.conversations.service.ConversationService.run`), so the socket
and the console's HTTP endpoints ask "the inbox snapshot of this store for this agent" or
"open the session of this login", never "run this function on a session". The one
exception to the thread is the login's read-only check, :meth:`TeamService.login_check`,
which the login endpoint runs on a reader thread of its own (``read``). Writes to a
conversation's event log (agent messages, notes, takeovers) stay in
:class:`~chatbot.conversations.service.ConversationService`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from chatbot.agents import authz, inbox, sessions, team
from chatbot.agents.accounts import accessible_stores
from chatbot.agents.authz import Principal
from chatbot.agents.models import Agent
from chatbot.agents.summary import Classify
from chatbot.conversations.log import ConversationRef, to_ref
from chatbot.errors import AuthError, NotFoundError
from chatbot.protocol.common import ErrorCode
from chatbot.security.login import throttle as login_throttle
from chatbot.security.throttle import Key, Refusal

# ``run(fn, *args)``: ``fn(session, *args)`` in one transaction, in the database thread.
Runner = Callable[..., Awaitable[Any]]


class InboxService:
    """What the console reads about a store's conversations, and the read marks.

    ``classify`` is the answering router (``chatbot.answering.router.route``): handoff
    summaries label topics with it and the copilot skips messages that ask nothing.
    """

    def __init__(self, run: Runner, classify: Classify) -> None:
        self._run = run
        self._classify = classify

    async def store(self, name_or_key: str) -> tuple[int, str] | None:
        """``(store id, name)`` of a store by name or widget key."""
        return await self._run(inbox.store_ref, name_or_key)  # type: ignore[no-any-return]

    async def conversation(self, public_id: str) -> ConversationRef:
        """A fresh snapshot of a conversation; ``NotFoundError`` when there is none."""

        def find(session: Session) -> ConversationRef:
            conv = inbox.find_conversation(session, public_id)
            if conv is None:
                raise NotFoundError("no such conversation", code=ErrorCode.CONVERSATION_NOT_FOUND)
            return to_ref(conv)

        return await self._run(find)  # type: ignore[no-any-return]

    async def snapshot(
        self, store_id: int, agent_id: int, kind: str, q: str
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The rows of one filter and search, with the counts per filter."""
        return await self._run(  # type: ignore[no-any-return]
            inbox.inbox_snapshot, store_id, agent_id, kind, q, self._classify
        )

    async def updates(
        self, store_id: int, ids: Sequence[int], agent_id: int, kind: str, q: str
    ) -> tuple[list[tuple[dict[str, Any], bool]], dict[str, int]]:
        """Fresh rows of these conversations (and whether each still matches), the counts."""
        return await self._run(  # type: ignore[no-any-return]
            inbox.inbox_updates, store_id, ids, agent_id, kind, q, self._classify
        )

    async def details(self, conversation_id: int) -> dict[str, Any]:
        """The opened conversation's store, customer panel, owner and handoff summary."""
        return await self._run(  # type: ignore[no-any-return]
            inbox.conversation_details, conversation_id, self._classify
        )

    async def owner_id(self, conversation_id: int) -> int | None:
        return await self._run(inbox.owner_id, conversation_id)  # type: ignore[no-any-return]

    async def owner(self, conversation_id: int) -> dict[str, Any] | None:
        """``{id, name}`` of the owning agent, or None."""
        return await self._run(inbox.owner_of, conversation_id)  # type: ignore[no-any-return]

    async def mark_read(self, agent_id: int, conversation_id: int) -> None:
        await self._run(inbox.mark_read, agent_id, conversation_id)

    async def copilot_input(self, conversation_id: int) -> inbox.CopilotInput | None:
        """The shopper message the copilot answers, with its context; None before one."""
        return await self._run(  # type: ignore[no-any-return]
            inbox.copilot_input, conversation_id, self._classify
        )


class TeamService:
    """Who is signed in, what they may do, and (admins) the team's accounts.

    ``read`` runs :meth:`login_check` (default ``run``): the console's login endpoint
    gives it a thread of its own (:func:`chatbot.storage.db.thread_runner`), so checking
    a login never queues behind, or in front of, the chat's writes on the database thread
    (SQLite WAL readers never block).
    """

    def __init__(self, run: Runner, *, read: Runner | None = None) -> None:
        self._run = run
        self._read = read or run

    async def authorize(self, token: str | None, store_id: int | None = None) -> Principal:
        """The live session's principal (and access to ``store_id``), else ``AuthError``."""
        return await self._run(  # type: ignore[no-any-return]
            authz.authorize, token, store_id=store_id
        )

    async def sign_in(self, token: str | None) -> tuple[Principal, list[dict[str, Any]]]:
        """The principal and the stores it works in (``{name, key, title}`` each)."""

        def fn(session: Session) -> tuple[Principal, list[dict[str, Any]]]:
            principal = authz.authorize(session, token)
            agent = session.get(Agent, principal.agent_id)
            stores = accessible_stores(session, agent) if agent is not None else []
            rows = [{"name": s.name, "key": s.widget_key, "title": s.title} for s in stores]
            return principal, rows

        return await self._run(fn)  # type: ignore[no-any-return]

    async def login_check(self, email: str, keys: Sequence[Key]) -> Refusal | sessions.Credentials:
        """Read only, before the password check: the refusal when the account + address
        ``keys`` are backing off after failures, else the stored credentials of ``email``
        (an unknown account's have no agent and no hash: the check costs the same)."""
        return await self._read(_login_check, email, keys)  # type: ignore[no-any-return]

    async def finish_login(
        self, keys: Sequence[Key], agent_id: int | None, new_hash: str | None, *,
        user_agent: str, ip: str,
    ) -> tuple[sessions.LoginResult, Principal] | None:
        """The write after a login's password check, in one transaction: with no
        ``agent_id`` (a wrong password, an unknown or inactive account) one more failure
        counted for the account + address ``keys``; else their failures cleared and a
        session opened (``new_hash``: the password rehashed with today's parameters).
        None when the login failed, also when the account went away in between."""
        return await self._run(  # type: ignore[no-any-return]
            _finish_login, keys, agent_id, new_hash, user_agent=user_agent, ip=ip
        )

    async def logout(self, token: str) -> bool:
        """End the session behind ``token``; True when there was one."""
        return await self._run(sessions.logout, token)  # type: ignore[no-any-return]

    async def apply(self, token: str | None, action: team.TeamAction) -> list[dict[str, Any]]:
        """Run an admin's team action (list, add, remove, set stores); the team after it."""
        return await self._run(team.apply, token, action)  # type: ignore[no-any-return]


def _login_check(
    session: Session, email: str, keys: Sequence[Key]
) -> Refusal | sessions.Credentials:
    refusal = login_throttle.check(session, keys)
    return refusal if refusal is not None else sessions.credentials(session, email)


def _finish_login(
    session: Session, keys: Sequence[Key], agent_id: int | None, new_hash: str | None, *,
    user_agent: str, ip: str,
) -> tuple[sessions.LoginResult, Principal] | None:
    if agent_id is None:
        login_throttle.fail(session, keys)
        return None
    login_throttle.settle(session, keys, failed=False)  # clears this pair's failures
    try:
        result = sessions.open_session(session, agent_id, user_agent=user_agent, ip=ip,
                                       new_hash=new_hash)
    except AuthError:
        return None
    return result, Principal.of(result.agent)
