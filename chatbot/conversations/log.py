"""The conversation event log: seq allocation, event rows and replay (synchronous).

Every function takes a ``Session`` and runs inside the caller's transaction. The
``UPDATE conversations SET last_seq = last_seq + n`` that allocates seqs takes the row
lock (PostgreSQL) or the write lock (SQLite), which serialises allocation across
processes; the unique ``(conversation_id, seq)`` constraint backs it up. Bot output
(``bot_only=True``) adds ``AND state IN ('bot', 'waiting')`` to that same ``UPDATE``, so
once an agent owns a conversation no bot event can be stored, whichever process runs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, insert, select, update
from sqlalchemy.orm import Session

from chatbot.conversations import ownership
from chatbot.conversations.hub import StoredEvent
from chatbot.conversations.models import Conversation, ConversationEvent
from chatbot.errors import ConflictError, NotFoundError
from chatbot.protocol import chat
from chatbot.storage.clock import utcnow

# Events that are a message (shopper, bot reply, agent): they move ``last_message_at``.
MESSAGE_KINDS = frozenset({"ack", "done", "agent_message"})
STATUS_TEXT = {
    "handoff_requested": "We asked a team member to join.",
    "agent_joined": "{agent} joined the conversation.",
    "agent_left": "{agent} handed the conversation back to the assistant.",
    "resolved": "This conversation was closed.",
    "reopened": "The conversation was reopened.",
}
_ACTION_STATUS = {
    ownership.Action.REQUEST_HANDOFF: "handoff_requested",
    ownership.Action.TAKE_OVER: "agent_joined",
    ownership.Action.HAND_BACK: "agent_left",
    ownership.Action.RESOLVE: "resolved",
    ownership.Action.REOPEN: "reopened",
}


class BotSilencedError(ConflictError):
    """The bot tried to speak while a human owns the conversation."""

    code = "bot_silenced"


@dataclass(frozen=True)
class ConversationRef:
    """A snapshot of a conversation row (ids and ownership), safe to pass between tasks."""

    id: int
    public_id: str
    store_id: int
    customer_id: int | None
    state: str
    version: int
    last_seq: int
    agent_name: str = ""


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its wire ``type`` (kind) and fields, not numbered yet."""

    kind: str
    payload: dict[str, Any]
    internal: bool = False
    reply_id: str | None = None

    @classmethod
    def of(
        cls, event: chat.LoggedEvent, *, internal: bool = False, reply_id: str | None = None
    ) -> NewEvent:
        """The event built by the protocol's typed constructor, ready to be numbered."""
        kind, payload = chat.body(event)
        return cls(kind, payload, internal, reply_id)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def to_ref(c: Conversation) -> ConversationRef:
    return ConversationRef(
        c.id, c.public_id, c.store_id, c.customer_id, c.state, c.version, c.last_seq, c.agent_name
    )


def find_in_store(session: Session, store_id: int, public_id: str) -> ConversationRef | None:
    """A store's conversation by its public id, or None. No proof is asked: for the
    server's own bookkeeping (an order action's outcome told in its conversation), never
    for a shopper's resume, which needs the customer or the resume token."""
    row = session.scalars(
        select(Conversation).where(Conversation.store_id == store_id,
                                   Conversation.public_id == public_id)
    ).first()
    return to_ref(row) if row is not None else None


def status_event(kind: str, state: str, agent: str = "", text: str | None = None) -> NewEvent:
    """A stored ``status`` event with the standard shopper-facing text."""
    if text is None:
        text = STATUS_TEXT.get(kind, "").format(agent=agent or "An agent")
    return NewEvent.of(chat.Status(kind=kind, text=text, agent=agent or None, state=state))


# ---- synchronous building blocks (one Session = one transaction) ------------------------


_CONVERSATIONS = cast(Table, Conversation.__table__)
_EVENTS = cast(Table, ConversationEvent.__table__)


def _bump(*, bot_only: bool, message: bool) -> Update:
    """``UPDATE conversations SET last_seq = last_seq + :n ...`` built once (hot path)."""
    table = _CONVERSATIONS
    stmt = update(table).where(table.c.id == bindparam("cid"))
    if bot_only:
        stmt = stmt.where(table.c.state.in_(sorted(ownership.BOT_MAY_SPEAK)))
    values: dict[str, Any] = {"last_seq": table.c.last_seq + bindparam("n")}
    if message:
        values["last_message_at"] = bindparam("now")  # what the console inbox sorts by
    return stmt.values(**values)


# Prebuilt statements: every token batch runs these, so skip rebuilding them per call.
_BUMPS = {(b, m): _bump(bot_only=b, message=m) for b in (False, True) for m in (False, True)}
_LAST_SEQ = select(_CONVERSATIONS.c.last_seq).where(_CONVERSATIONS.c.id == bindparam("cid"))
_INSERT_EVENTS = insert(_EVENTS)


def append_events(
    session: Session, conversation_id: int, events: Sequence[NewEvent], *, bot_only: bool = False
) -> list[StoredEvent]:
    """Number ``events`` with the next seqs and insert them, in the caller's transaction."""
    if not events:
        return []
    conn = session.connection()
    now = utcnow()
    message = any(e.kind in MESSAGE_KINDS for e in events)
    result = conn.execute(
        _BUMPS[(bot_only, message)], {"cid": conversation_id, "n": len(events), "now": now}
    )
    if result.rowcount != 1:
        if bot_only:
            raise BotSilencedError("a human owns this conversation; the bot stays silent")
        raise NotFoundError(f"conversation {conversation_id} does not exist")
    last = conn.execute(_LAST_SEQ, {"cid": conversation_id}).scalar_one()
    first = last - len(events) + 1
    stored = [
        StoredEvent(conversation_id, first + i, e.kind, e.payload, e.internal, e.reply_id)
        for i, e in enumerate(events)
    ]
    conn.execute(
        _INSERT_EVENTS,
        [
            {
                "conversation_id": conversation_id,
                "seq": s.seq,
                "kind": s.kind,
                "payload": s.payload,
                "internal": s.internal,
                "reply_id": s.reply_id,
                "created_at": now,
            }
            for s in stored
        ],
    )
    return stored


_LOCK = (
    update(_CONVERSATIONS)
    .where(_CONVERSATIONS.c.id == bindparam("cid"))
    .values(last_seq=_CONVERSATIONS.c.last_seq)
)


def told_actions(session: Session, conversation_id: int) -> set[tuple[str, str]]:
    """The ``(action id, status)`` pairs the conversation's ``action`` events already tell."""
    rows = session.execute(
        select(ConversationEvent.payload).where(
            ConversationEvent.conversation_id == conversation_id,
            ConversationEvent.kind == "action",
        )
    ).scalars()
    return {(str(p.get("id", "")), str(p.get("status", ""))) for p in rows if p}


def append_action_events(
    session: Session, conversation_id: int, events: Sequence[NewEvent]
) -> list[StoredEvent]:
    """Append the ``action`` events (outcomes of order actions) the log does not hold yet.

    Each ``(id, status)`` is stored once per conversation whoever tells it: the reply that
    answered the proposal, a later reply, an agent's decision, the expiry sweep, another
    process. The conversation row is locked first (a no-op ``UPDATE``: the row lock on
    PostgreSQL, the write lock on SQLite), so the check and the insert cannot interleave
    with another writer's; call it before anything else in the transaction.
    """
    if not events:
        return []
    if session.connection().execute(_LOCK, {"cid": conversation_id}).rowcount != 1:
        raise NotFoundError(f"conversation {conversation_id} does not exist")
    told = told_actions(session, conversation_id)
    fresh: list[NewEvent] = []
    for event in events:
        key = (str(event.payload.get("id", "")), str(event.payload.get("status", "")))
        if event.kind == "action" and key not in told:
            told.add(key)
            fresh.append(event)
    return append_events(session, conversation_id, fresh)


def events_after(
    session: Session,
    conversation_id: int,
    after_seq: int,
    *,
    include_internal: bool = False,
    coalesce: bool = True,
) -> list[StoredEvent]:
    """Stored events with ``seq > after_seq`` in order.

    With ``coalesce``, token events of a reply whose ``done`` is in the result are left
    out (``done.text`` is the whole reply); tokens of a reply still streaming are kept.
    """
    stmt = (
        select(ConversationEvent)
        .where(ConversationEvent.conversation_id == conversation_id)
        .where(ConversationEvent.seq > after_seq)
        .order_by(ConversationEvent.seq)
    )
    if not include_internal:
        stmt = stmt.where(ConversationEvent.internal.is_(False))
    rows = [
        StoredEvent(r.conversation_id, r.seq, r.kind, r.payload, r.internal, r.reply_id)
        for r in session.scalars(stmt)
    ]
    if not coalesce:
        return rows
    finished = {r.reply_id for r in rows if r.kind == "done"}
    return [r for r in rows if not (r.kind == "token" and r.reply_id in finished)]


def transition_with_event(
    session: Session, conv: Conversation | ConversationRef, action: ownership.Action, **kw: Any
) -> tuple[ownership.Transition, list[StoredEvent]]:
    move = ownership.transition(session, conv.id, action, **kw)
    kind = _ACTION_STATUS[move.action]
    agent = kw.get("agent_name", "") or (conv.agent_name if kind == "agent_left" else "")
    stored = append_events(session, conv.id, [status_event(kind, move.new_state, agent)])
    return move, stored
