"""What the console shows: inbox rows, counts, the customer panel and read marks (sync SQL).

Every function takes a ``Session`` and is run inside one transaction by
:class:`~chatbot.agents.services.InboxService`. Rows are plain JSON-ready dicts: their fields
are documented in ``docs/protocol.md`` ("Console socket"). Handoff summaries and the
copilot's choice of question read messages with ``classify`` (the answering router, handed
in by the server: see :data:`chatbot.agents.summary.Classify`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chatbot.agents.models import AgentRead
from chatbot.agents.summary import NOT_A_QUESTION, Classify, summarize
from chatbot.conversations.history import recent_turns, verified_orders
from chatbot.conversations.models import (
    AGENT,
    RESOLVED,
    WAITING,
    ChatMessage,
    Conversation,
    ConversationEvent,
    GuestVerification,
)
from chatbot.errors import NotFoundError
from chatbot.text import item_lines, money, shorten
from chatbot.types import Turn
from knowledge_base.models import Customer, Order, Store
from knowledge_base.orders import customer_orders, verified_guest_orders
from knowledge_base.stores import find_store

INBOX_LIMIT = 200
RECENT_MESSAGES = 8  # per conversation, for previews, waiting times and summaries
PREVIEW_CHARS = 160
PANEL_ORDERS = 5
COPILOT_LOOKBACK = 6  # shopper messages searched for the question the copilot answers
COPILOT_HISTORY = 8  # turns before it given to the pipeline (as the bot's own replies get)
# Bot replies that could not be grounded (ReplyDone.reason); counted in summaries.
UNGROUNDED_REASONS = frozenset({"no_match", "order_not_found", "no_orders", "verify_failed"})


def iso(when: datetime | None) -> str | None:
    """A naive-UTC database time as ISO 8601 with ``Z``."""
    return None if when is None else when.replace(microsecond=0).isoformat() + "Z"


def _like(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filter_clause(kind: str, agent_id: int) -> ColumnElement[bool] | None:
    if kind == "all":
        return None
    if kind == "open":
        return Conversation.state != RESOLVED
    if kind == "mine":
        return and_(Conversation.state == AGENT, Conversation.agent_id == agent_id)
    return Conversation.state == kind


def _search_clause(q: str) -> ColumnElement[bool]:
    pattern = _like(q)
    name = Customer.first_name + " " + Customer.last_name
    in_messages = exists().where(
        ChatMessage.conversation_id == Conversation.id,
        ChatMessage.text.ilike(pattern, escape="\\"),
    )
    return or_(
        Conversation.public_id.ilike(pattern, escape="\\"),
        name.ilike(pattern, escape="\\"),
        Customer.email.ilike(pattern, escape="\\"),
        Customer.source_id.ilike(pattern, escape="\\"),
        in_messages,
    )


def inbox_counts(session: Session, store_id: int, agent_id: int) -> dict[str, int]:
    """How many conversations each inbox filter holds."""
    by_state = dict(
        session.execute(
            select(Conversation.state, func.count())
            .where(Conversation.store_id == store_id)
            .group_by(Conversation.state)
        ).all()
    )
    mine = session.scalar(
        select(func.count()).where(
            Conversation.store_id == store_id,
            Conversation.state == AGENT,
            Conversation.agent_id == agent_id,
        )
    )
    counts = {s: int(by_state.get(s, 0)) for s in ("bot", WAITING, AGENT, RESOLVED)}
    counts["open"] = counts["bot"] + counts[WAITING] + counts[AGENT]
    counts["all"] = counts["open"] + counts[RESOLVED]
    counts["mine"] = int(mine or 0)
    return counts


def inbox_rows(
    session: Session,
    store_id: int,
    agent_id: int,
    *,
    classify: Classify,
    filter: str = "open",
    q: str = "",
    only: Sequence[int] | None = None,
    limit: int = INBOX_LIMIT,
) -> list[dict[str, Any]]:
    """Inbox rows of a store for one agent, most recently active first."""
    read = (
        select(AgentRead.last_read_seq)
        .where(AgentRead.agent_id == agent_id, AgentRead.conversation_id == Conversation.id)
        .scalar_subquery()
    )
    unread = (
        select(func.count(ChatMessage.id))
        .where(
            ChatMessage.conversation_id == Conversation.id,
            ChatMessage.role == "shopper",
            ChatMessage.seq > func.coalesce(read, 0),
        )
        .scalar_subquery()
    )
    query = (
        select(Conversation, Customer, Store.name, unread)
        .join(Store, Store.id == Conversation.store_id)
        .outerjoin(Customer, Customer.id == Conversation.customer_id)
        .where(Conversation.store_id == store_id)
        .order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
        .limit(limit)
    )
    clause = _filter_clause(filter, agent_id)
    if clause is not None:
        query = query.where(clause)
    if q:
        query = query.where(_search_clause(q))
    if only is not None:
        query = query.where(Conversation.id.in_(list(only)))
    found = session.execute(query).all()
    recent = _recent_messages(session, [conv.id for conv, *_ in found])
    handoffs = _handoff_times(
        session, [conv.id for conv, *_ in found if conv.state in (WAITING, AGENT)]
    )
    return [
        _row(conv, customer, store_name, int(n or 0), agent_id, recent[conv.id],
             handoffs.get(conv.id), classify)
        for conv, customer, store_name, n in found
    ]


def inbox_row(
    session: Session, conversation_id: int, agent_id: int, *, filter: str, q: str,
    classify: Classify,
) -> tuple[dict[str, Any], bool]:
    """One conversation's inbox row, and whether it matches the agent's filter and search."""
    conv = session.get(Conversation, conversation_id)
    if conv is None:
        raise NotFoundError("no such conversation")
    matching = inbox_rows(session, conv.store_id, agent_id, filter=filter, q=q,
                          only=[conversation_id], classify=classify)
    if matching:
        return matching[0], True
    rows = inbox_rows(session, conv.store_id, agent_id, filter="all", only=[conversation_id],
                      classify=classify)
    return rows[0], False


def _recent_messages(session: Session, ids: Sequence[int]) -> dict[int, list[ChatMessage]]:
    """The last few visible messages (notes included) of each conversation, oldest first."""
    out: dict[int, list[ChatMessage]] = defaultdict(list)
    if not ids:
        return out
    rank = (
        func.row_number()
        .over(partition_by=ChatMessage.conversation_id, order_by=ChatMessage.seq.desc())
        .label("rank")
    )
    inner = (
        select(ChatMessage.id, rank)
        .where(ChatMessage.conversation_id.in_(list(ids)), ChatMessage.text != "",
               ChatMessage.seq.is_not(None))
        .subquery()
    )
    rows = session.scalars(
        select(ChatMessage)
        .join(inner, inner.c.id == ChatMessage.id)
        .where(inner.c.rank <= RECENT_MESSAGES)
        .order_by(ChatMessage.conversation_id, ChatMessage.seq)
    )
    for message in rows:
        out[message.conversation_id].append(message)
    return out


def _handoff_times(session: Session, ids: Sequence[int]) -> dict[int, datetime]:
    """When each conversation was last handed off to a person (its status event)."""
    if not ids:
        return {}
    rows = session.execute(
        select(ConversationEvent.conversation_id, ConversationEvent.created_at,
               ConversationEvent.payload)
        .where(ConversationEvent.conversation_id.in_(list(ids)),
               ConversationEvent.kind == "status")
        .order_by(ConversationEvent.seq)
    )
    out: dict[int, datetime] = {}
    for conversation_id, created_at, payload in rows:
        if isinstance(payload, dict) and payload.get("kind") == "handoff_requested":
            out[conversation_id] = created_at
    return out


def _customer_brief(customer: Customer | None) -> dict[str, Any]:
    if customer is None:
        return {"verified": False, "name": "", "email": ""}
    return {"verified": True, "name": customer.name, "email": customer.email,
            "id": customer.source_id}


def _row(
    conv: Conversation,
    customer: Customer | None,
    store_name: str,
    unread: int,
    agent_id: int,
    recent: list[ChatMessage],
    handoff_at: datetime | None,
    classify: Classify,
) -> dict[str, Any]:
    visible = [m for m in recent if not m.internal]
    last = visible[-1] if visible else None
    waiting_since: datetime | None = None
    if conv.state == WAITING:
        waiting_since = handoff_at or conv.updated_at
    elif conv.state == AGENT and last is not None and last.role == "shopper":
        # The shopper has been waiting since the first message the agent has not answered.
        waiting_since = last.created_at
        for message in reversed(visible):
            if message.role != "shopper":
                break
            waiting_since = message.created_at
    summary = None
    if conv.state in (WAITING, AGENT) and handoff_at is not None:
        summary = handoff_summary(conv, visible, classify)
    return {
        "conversation_id": conv.public_id,
        "store": store_name,
        "state": conv.state,
        "version": conv.version,
        "owner": {"id": conv.agent_id, "name": conv.agent_name} if conv.agent_id else None,
        "mine": conv.state == AGENT and conv.agent_id == agent_id,
        "customer": _customer_brief(customer),
        "last_message": {
            "role": last.role,
            "text": shorten(last.text, PREVIEW_CHARS),
            "at": iso(last.created_at),
        }
        if last
        else None,
        "last_message_at": iso(conv.last_message_at),
        "created_at": iso(conv.created_at),
        "unread": unread,
        "waiting_since": iso(waiting_since),
        "summary": summary,
    }


def handoff_summary(
    conv: Conversation, messages: Sequence[ChatMessage], classify: Classify
) -> dict[str, Any]:
    """The deterministic handoff summary (see :mod:`chatbot.agents.summary`)."""
    turns = [Turn(role=m.role, text=m.text) for m in messages if not m.internal]  # type: ignore[arg-type]
    unanswered = sum(1 for m in messages if m.role == "bot" and m.reason in UNGROUNDED_REASONS)
    return summarize(turns, classify=classify, reason=conv.handoff_reason,
                     unanswered=unanswered).as_dict()


# ---- the open conversation -----------------------------------------------------------------


def conversation_details(
    session: Session, conversation_id: int, classify: Classify
) -> dict[str, Any]:
    """Customer panel, owner and summary of one conversation (the transcript comes from
    the event log)."""
    conv = session.get(Conversation, conversation_id)
    if conv is None:
        raise NotFoundError("no such conversation")
    store_name = session.scalar(select(Store.name).where(Store.id == conv.store_id)) or ""
    messages = _recent_messages(session, [conv.id])[conv.id]
    handoff_at = _handoff_times(session, [conv.id]).get(conv.id)
    return {
        "store": store_name,
        "customer": customer_panel(session, conv),
        "owner": {"id": conv.agent_id, "name": conv.agent_name} if conv.agent_id else None,
        "summary": handoff_summary(conv, messages, classify)
        if handoff_at is not None or conv.state == WAITING
        else None,
    }


def customer_panel(session: Session, conv: Conversation) -> dict[str, Any]:
    """The verified identity and recent orders an agent sees beside the transcript.

    A verified customer (signed identity token) shows their newest orders; a guest shows
    only the orders they proved in this conversation (order number + email).
    """
    if conv.customer_id is not None:
        customer = session.get(Customer, conv.customer_id)
        if customer is not None and customer.store_id == conv.store_id:
            orders = customer_orders(session, conv.store_id, customer.id, limit=PANEL_ORDERS)
            return {
                "verified": True,
                "verified_by": "signed identity",
                "id": customer.source_id,
                "name": customer.name,
                "email": customer.email,
                "phone": customer.phone,
                "since": iso(customer.created_at),
                "orders": [_order(o) for o in orders],
                "verified_orders": [],
            }
    numbers = list(
        session.scalars(
            select(GuestVerification.order_number)
            .where(GuestVerification.conversation_id == conv.id)
            .order_by(GuestVerification.id)
        )
    )
    orders = verified_guest_orders(session, conv.store_id, numbers) if numbers else []
    return {
        "verified": False,
        "name": "",
        "email": orders[0].email if orders else "",
        "orders": [_order(o) for o in orders],
        "verified_orders": numbers,
    }


def _order(order: Order) -> dict[str, Any]:
    tracking = ""
    if order.shipments:
        last = order.shipments[-1]
        tracking = " · ".join(
            p for p in (last.carrier, last.tracking_number, last.status.replace("_", " ")) if p
        )
    return {
        "number": order.number,
        "status": order.status,
        "placed_at": iso(order.placed_at),
        "total_display": money(order.total, order.currency),
        "items": item_lines(order, with_prices=False)[:4],
        "tracking": tracking,
    }


# ---- read marks ----------------------------------------------------------------------------


def mark_read(session: Session, agent_id: int, conversation_id: int) -> int:
    """Everything up to the conversation's latest event is read by this agent; returns it."""
    last = session.scalar(select(Conversation.last_seq).where(Conversation.id == conversation_id))
    if last is None:
        raise NotFoundError("no such conversation")
    row = session.get(AgentRead, (agent_id, conversation_id))
    if row is None:
        try:
            with session.begin_nested():
                session.add(AgentRead(agent_id=agent_id, conversation_id=conversation_id,
                                      last_read_seq=last))
        except IntegrityError:
            # The same agent in two tabs: the other insert won, update it instead.
            row = session.get(AgentRead, (agent_id, conversation_id))
    if row is not None and row.last_read_seq < last:
        row.last_read_seq = last
    session.flush()
    return last


def find_conversation(session: Session, public_id: str) -> Conversation | None:
    """A conversation by its public id (any store; the caller checks access)."""
    return session.scalars(select(Conversation).where(Conversation.public_id == public_id)).first()


# ---- small lookups for the console socket ------------------------------------------------


def store_ref(session: Session, name_or_key: str) -> tuple[int, str] | None:
    """``(id, name)`` of a store by name or widget key, or None."""
    store = find_store(session, name_or_key)
    return None if store is None else (store.id, store.name)


def owner_id(session: Session, conversation_id: int) -> int | None:
    """The id of the agent owning the conversation (kept after resolve), or None."""
    return session.scalar(select(Conversation.agent_id).where(Conversation.id == conversation_id))


def owner_of(session: Session, conversation_id: int) -> dict[str, Any] | None:
    """``{id, name}`` of the agent owning the conversation, or None."""
    row = session.execute(
        select(Conversation.agent_id, Conversation.agent_name).where(
            Conversation.id == conversation_id
        )
    ).first()
    if row is None or row[0] is None:
        return None
    return {"id": row[0], "name": row[1]}


def inbox_snapshot(
    session: Session, store_id: int, agent_id: int, kind: str, q: str, classify: Classify
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The rows and counts of an ``inbox`` frame."""
    rows = inbox_rows(session, store_id, agent_id, filter=kind, q=q, classify=classify)
    return rows, inbox_counts(session, store_id, agent_id)


def inbox_updates(
    session: Session, store_id: int, ids: Sequence[int], agent_id: int, kind: str, q: str,
    classify: Classify,
) -> tuple[list[tuple[dict[str, Any], bool]], dict[str, int]]:
    """Fresh rows (and whether they match) for changed conversations, plus the counts.

    Conversations of another store (queued just before the agent switched stores) are
    left out.
    """
    mine = set(session.scalars(
        select(Conversation.id).where(Conversation.id.in_(list(ids)),
                                      Conversation.store_id == store_id)
    ))
    updates = [inbox_row(session, i, agent_id, filter=kind, q=q, classify=classify)
               for i in ids if i in mine]
    return updates, inbox_counts(session, store_id, agent_id)


@dataclass(frozen=True)
class CopilotInput:
    """What the copilot answers: a shopper message, the turns before it, proven orders."""

    text: str
    seq: int
    history: list[Turn]
    verified_orders: frozenset[str]
    # The conversation's dialogue state (what "it" and "that order" mean).
    dialogue: dict[str, Any] | None = None


def copilot_input(
    session: Session, conversation_id: int, classify: Classify
) -> CopilotInput | None:
    """The shopper message the copilot should answer, with its context; None if none yet.

    That is the newest shopper message with a question in it: "can I talk to a person?" or
    "thanks!" after a real question is skipped, because the agent taking over wants help
    with the question, not a reply to the handoff request.
    """
    rows = session.execute(
        select(ChatMessage.text, ChatMessage.seq)
        .where(ChatMessage.conversation_id == conversation_id, ChatMessage.role == "shopper",
               ChatMessage.seq.is_not(None))
        .order_by(ChatMessage.seq.desc())
        .limit(COPILOT_LOOKBACK)
    ).all()
    if not rows:
        return None
    text, seq = next(
        (r for r in rows if classify(r[0], ()).intent not in NOT_A_QUESTION),
        rows[0],
    )
    history = recent_turns(session, conversation_id, int(seq or 0), COPILOT_HISTORY)
    orders = verified_orders(session, conversation_id)
    dialogue = session.scalar(
        select(Conversation.dialogue).where(Conversation.id == conversation_id)
    )
    return CopilotInput(text, int(seq or 0), history, orders, dialogue)
