"""The conversation service used by both sockets: store messages, number events, replay.

Every write is one database transaction that changes rows and appends events with the
next ``seq`` numbers (see :mod:`chatbot.conversations.log`). Only after the commit are
the events published to the in-process hub, so a client never sees an event the database
does not have, and ``hello`` with ``last_seq`` can replay exactly what it missed.

Database calls run in worker threads so the event loop keeps streaming while SQLite or
PostgreSQL commits. SQLite allows one writer at a time and makes the others wait in a
sleeping busy loop (1, 2, 5, 10 ... 100 ms), so on SQLite the service queues its calls on
one thread instead: same throughput, none of the sleeps.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chatbot.conversations import ownership
from chatbot.conversations.history import HISTORY_TURNS, recent_turns, shopper_of, verified_orders
from chatbot.conversations.hub import Audience, ConversationHub, HubItem, StoredEvent
from chatbot.conversations.log import (
    BotSilencedError,
    ConversationRef,
    NewEvent,
    append_action_events,
    append_events,
    events_after,
    find_in_store,
    hash_token,
    now_iso,
    status_event,
    to_ref,
    told_actions,
    transition_with_event,
)
from chatbot.conversations.models import (
    RESOLVED,
    ChatMessage,
    Conversation,
    ConversationEvent,
    GuestVerification,
    new_public_id,
)
from chatbot.conversations.writer import GroupWriter
from chatbot.errors import ConflictError, NotFoundError
from chatbot.protocol import chat
from chatbot.storage.clock import utcnow
from chatbot.storage.db import Database, transaction
from chatbot.types import Source, Turn

if TYPE_CHECKING:  # (the actions domain hands itself in: no import at run time)
    from chatbot.actions.service import ActionService, Outcome

T = TypeVar("T")


def db_executor(db: Database) -> Executor | None:
    """One thread for SQLite (a single writer anyway); the default pool otherwise."""
    if db.engine.dialect.name == "sqlite":
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatbot-db")
    return None


def new_resume_token() -> str:
    """A guest's proof of ownership of a conversation (only its hash is stored)."""
    return f"r_{secrets.token_urlsafe(24)}"


__all__ = ["BotSilencedError", "ConversationRef", "ConversationService", "NewEvent"]


@dataclass(frozen=True)
class ReplyContext:
    """What a bot reply starts from: a fresh snapshot, recent turns, proven orders."""

    conv: ConversationRef
    history: list[Turn]
    verified_orders: frozenset[str]
    # The answering pipeline's dialogue state (None for a new conversation).
    dialogue: dict[str, Any] | None = None


class ConversationService:
    """Conversation reads and writes for the sockets; publishes committed events to the hub."""

    def __init__(self, db: Database, hub: ConversationHub, *, group_commit: bool = True) -> None:
        self.db = db
        self.hub = hub
        self.executor = db_executor(db)
        # Token events of all streaming replies share transactions (see writer.py).
        self.writer = GroupWriter(db, self.executor) if group_commit else None
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    def close(self) -> None:
        """Let the database thread go (after the server stopped using the service)."""
        if self.executor is not None:
            self.executor.shutdown(wait=False)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(session, *args, **kwargs)`` in one transaction, in a worker thread."""

        def call() -> T:
            with transaction(self.db.sessions) as session:
                return fn(session, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def _lock(self, conversation_id: int) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[conversation_id] = lock
        return lock

    async def write(
        self,
        conv: ConversationRef,
        fn: Callable[..., tuple[T, list[StoredEvent]]],
        *args: Any,
        state: str | None = None,
        **kwargs: Any,
    ) -> tuple[T, list[StoredEvent]]:
        """Run a writing ``fn`` returning ``(result, stored events)``, then publish them.

        The per-conversation lock keeps publish order equal to seq order in this process.
        """
        async with self._lock(conv.id):
            result, stored = await self.run(fn, *args, **kwargs)
            await self._publish(conv, stored, state)
        return result, stored

    async def _publish(
        self, conv: ConversationRef, stored: list[StoredEvent], state: str | None = None
    ) -> None:
        """Publish committed events in seq order (caller holds the conversation lock)."""
        high = self.hub.high(conv.id)
        if stored and high is not None and stored[0].seq > high + 1:
            # Another process wrote in between (multi-process deployments): publish its
            # events first so followers see the log in order, without holes.
            missing = await self.run(
                events_after, conv.id, high, include_internal=True, coalesce=False
            )
            for event in missing:
                if event.seq < stored[0].seq:
                    self.hub.publish(HubItem(conv.id, conv.store_id, stored=event))
        for event in stored:
            self.hub.publish(HubItem(conv.id, conv.store_id, stored=event, state=state))

    async def append(
        self, conv: ConversationRef, events: Sequence[NewEvent], *, bot_only: bool = False
    ) -> list[StoredEvent]:
        """Append events (numbered, committed, then published)."""

        def fn(session: Session) -> tuple[None, list[StoredEvent]]:
            return None, append_events(session, conv.id, events, bot_only=bot_only)

        return (await self.write(conv, fn))[1]

    def publish_ephemeral(
        self, conv: ConversationRef, event: chat.Status | chat.Error, *, audience: Audience = "all"
    ) -> None:
        """Publish an event that is not stored (typing, thinking, an error) to this process's
        sockets; each socket stamps it with the seq it last delivered."""
        kind, fields = chat.body(event)
        ephemeral = {"type": kind, **fields}
        self.hub.publish(HubItem(conv.id, conv.store_id, ephemeral=ephemeral, audience=audience))

    # ---- conversations ----------------------------------------------------------------

    async def open(
        self,
        store_id: int,
        customer_id: int | None,
        *,
        public_id: str | None = None,
        resume_token: str | None = None,
    ) -> tuple[ConversationRef, str]:
        """Create a conversation; returns it and the guest's resume token.

        ``public_id``/``resume_token`` store a conversation whose id a ``welcome`` already
        handed out (conversations are created on their first message). If two tabs race
        to create it, the second gets the first's row when its proof matches.
        """
        token = resume_token or new_resume_token()

        def fn(session: Session) -> ConversationRef:
            conv = Conversation(
                store_id=store_id, customer_id=customer_id, resume_hash=hash_token(token)
            )
            if public_id is not None:
                conv.public_id = public_id
            session.add(conv)
            session.flush()
            return to_ref(conv)

        try:
            return await self.run(fn), token
        except IntegrityError:
            if public_id is None:
                raise
            found = await self.find_for_resume(store_id, public_id, customer_id, token)
            if found is None:
                raise ConflictError("that conversation id is taken", code="conflict") from None
            return found, token

    async def exists(self, public_id: str) -> bool:
        """Whether any store has a conversation with this public id."""

        def fn(session: Session) -> bool:
            found = session.scalar(
                select(Conversation.id).where(Conversation.public_id == public_id)
            )
            return found is not None

        return await self.run(fn)

    async def find_for_resume(
        self, store_id: int, public_id: str, customer_id: int | None, resume_token: str | None
    ) -> ConversationRef | None:
        """The conversation if this caller may resume it, else None (no existence leak).

        A verified customer's conversation needs the same customer; a guest conversation
        needs its resume token (and is attached to the customer if one is now verified).
        """

        def fn(session: Session) -> ConversationRef | None:
            conv = session.scalars(
                select(Conversation).where(
                    Conversation.public_id == public_id, Conversation.store_id == store_id
                )
            ).first()
            if conv is None:
                return None
            if conv.customer_id is not None:
                return to_ref(conv) if conv.customer_id == customer_id else None
            if not resume_token or not hmac.compare_digest(
                conv.resume_hash, hash_token(resume_token)
            ):
                return None
            if customer_id is not None:
                conv.customer_id = customer_id
                session.flush()
            return to_ref(conv)

        return await self.run(fn)

    async def get(self, conversation_id: int) -> ConversationRef:
        """A fresh snapshot from the database (ownership is read here, never from memory)."""

        def fn(session: Session) -> ConversationRef:
            conv = session.get(Conversation, conversation_id)
            if conv is None:
                raise NotFoundError(f"conversation {conversation_id} does not exist")
            return to_ref(conv)

        return await self.run(fn)

    async def find(self, store_id: int, public_id: str) -> ConversationRef | None:
        """A store's conversation by its public id, or None. No proof is asked: for the
        server's own bookkeeping (an order action's outcome told in its conversation); a
        shopper resumes through :meth:`find_for_resume`."""
        return await self.run(find_in_store, store_id, public_id)

    async def shopper(self, conv: ConversationRef) -> tuple[int | None, list[str]]:
        """Who the shopper is: the signed-in customer, else the one the bot identified
        (kept in the dialogue state), or None; and the orders a guest proved, sorted. An
        agent's own order action is made for them."""
        return await self.run(shopper_of, conv)

    async def replay(
        self, conv: ConversationRef, after_seq: int, *, include_internal: bool = False
    ) -> tuple[list[StoredEvent], int]:
        """Events after ``after_seq`` (coalesced) and the high-water seq they reach."""

        def fn(session: Session) -> tuple[list[StoredEvent], int]:
            # Read last_seq first: every seq up to it is committed, and later commits can
            # only add to the list read next, so max() of both is a gap-free high-water.
            last = (
                session.scalar(select(Conversation.last_seq).where(Conversation.id == conv.id)) or 0
            )
            events = events_after(session, conv.id, after_seq, include_internal=include_internal)
            return events, max([last, *(e.seq for e in events)])

        return await self.run(fn)

    # ---- messages ---------------------------------------------------------------------

    async def add_shopper_message(
        self, conv: ConversationRef, client_id: str, text: str
    ) -> tuple[StoredEvent, bool]:
        """Store a shopper message and its ``ack``; ``(ack, duplicate)``.

        A resent ``client_id`` returns the original ack and stores nothing. A message in a
        resolved conversation reopens it first.
        """

        def fn(session: Session) -> tuple[tuple[StoredEvent, bool], list[StoredEvent]]:
            old = session.scalars(
                select(ChatMessage).where(
                    ChatMessage.conversation_id == conv.id,
                    ChatMessage.role == "shopper",
                    ChatMessage.public_id == client_id,
                )
            ).first()
            if old is not None and old.seq is not None:
                ev = session.scalars(
                    select(ConversationEvent).where(
                        ConversationEvent.conversation_id == conv.id,
                        ConversationEvent.seq == old.seq,
                    )
                ).one()
                return (StoredEvent(conv.id, ev.seq, ev.kind, ev.payload), True), []
            stored: list[StoredEvent] = []
            state = session.scalar(select(Conversation.state).where(Conversation.id == conv.id))
            if state == RESOLVED:
                stored += transition_with_event(session, conv, ownership.Action.REOPEN)[1]
            event = NewEvent.of(chat.Ack(id=client_id, text=text, at=now_iso()))
            ack = append_events(session, conv.id, [event])[0]
            session.add(
                ChatMessage(
                    conversation_id=conv.id,
                    public_id=client_id,
                    role="shopper",
                    text=text,
                    seq=ack.seq,
                )
            )
            return (ack, False), [*stored, ack]

        return (await self.write(conv, fn))[0]

    async def begin_reply(
        self, conv: ConversationRef, before_seq: int, reply_id: str, in_reply_to: str
    ) -> ReplyContext | None:
        """Check ownership, read the context and create the reply row, in one transaction.

        Returns None (and creates nothing) when a human owns the conversation.
        """

        def fn(session: Session) -> ReplyContext | None:
            row = session.get(Conversation, conv.id)
            if row is None:
                raise NotFoundError(f"conversation {conv.id} does not exist")
            if row.state not in ownership.BOT_MAY_SPEAK:
                return None
            turns = recent_turns(session, conv.id, before_seq, HISTORY_TURNS)
            orders = verified_orders(session, conv.id)
            session.add(
                ChatMessage(
                    conversation_id=conv.id,
                    public_id=reply_id,
                    role="bot",
                    status="streaming",
                    in_reply_to=in_reply_to,
                )
            )
            return ReplyContext(to_ref(row), turns, orders, row.dialogue)

        return await self.run(fn)

    async def append_tokens(
        self, conv: ConversationRef, reply_id: str, pieces: Sequence[str]
    ) -> list[StoredEvent]:
        """Store token events of a bot reply; ``BotSilencedError`` once a human owns it."""
        events = [
            NewEvent.of(chat.Token(reply_id=reply_id, text=p), reply_id=reply_id) for p in pieces
        ]
        if self.writer is None:
            return await self.append(conv, events, bot_only=True)
        async with self._lock(conv.id):
            stored = await self.writer.append(conv.id, events, bot_only=True)
            await self._publish(conv, stored)
        return stored

    async def finish_reply(
        self,
        conv: ConversationRef,
        reply_id: str,
        *,
        text: str,
        in_reply_to: str,
        sources: Sequence[Source] = (),
        handoff: bool = False,
        interrupted: bool = False,
        reason: str = "",
        dialogue: dict[str, Any] | None = None,
        action: Mapping[str, Any] | None = None,
        outcomes: Sequence[Mapping[str, Any]] = (),
    ) -> StoredEvent:
        """Store the reply's final text and its ``done`` event (and, for a complete reply,
        the dialogue state it leaves, in the same transaction).

        An interrupted reply's ``done`` is stored even under an agent: it is the marker
        that closes the partial text the shopper saw, not new bot speech.

        ``action`` is the reply's order action (``ReplyDone.action``, issue #19): a
        proposal goes into ``done.action`` (so a resume shows the card again); an outcome
        is stored as an ``action`` event just before the ``done``, in the same
        transaction. The outcome is a fact about the order, stored even when the reply is
        interrupted; a proposal is only offered by a complete reply. ``outcomes`` are
        other proposals of the conversation that ended and were not told yet (one the
        shopper moved on from, one a cut-short reply answered): their ``action`` events go
        first. An ``(id, status)`` the log already holds is not stored again.
        """
        outcome = chat.action_event(action)
        proposal = None if interrupted else chat.proposed_action(action)
        told = [e for e in (chat.action_event(o) for o in outcomes) if e is not None]
        if outcome is not None:
            told = [e for e in told if e.id != outcome.id] + [outcome]
        outcome_events = [NewEvent.of(e, reply_id=reply_id) for e in told]
        event = NewEvent.of(
            chat.Done(
                reply_id=reply_id,
                text=text,
                sources=[chat.SourceRef(s.kind, s.id, s.title, s.url) for s in sources],
                handoff=handoff,
                interrupted=interrupted,
                in_reply_to=in_reply_to,
                at=now_iso(),
                action=proposal,
            ),
            reply_id=reply_id,
        )
        srcs = event.payload["sources"]

        def fn(session: Session) -> tuple[StoredEvent, list[StoredEvent]]:
            # (First in the transaction: it takes the conversation's lock.)
            before = append_action_events(session, conv.id, outcome_events)
            done = append_events(
                session,
                conv.id,
                [event],
                bot_only=not interrupted,
            )[0]
            session.execute(
                update(ChatMessage)
                .where(
                    ChatMessage.conversation_id == conv.id,
                    ChatMessage.role == "bot",
                    ChatMessage.public_id == reply_id,
                )
                .values(
                    text=text,
                    sources=srcs,
                    handoff=handoff,
                    seq=done.seq,
                    reason=reason[:50],
                    status="interrupted" if interrupted else "complete",
                    updated_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if dialogue is not None and not interrupted:
                session.execute(
                    update(Conversation)
                    .where(Conversation.id == conv.id)
                    .values(dialogue=dialogue)
                    .execution_options(synchronize_session=False)
                )
            return done, [*before, done]

        return (await self.write(conv, fn))[0]

    async def add_action_outcome(
        self, conv: ConversationRef, action: Mapping[str, Any], text: str, *,
        internal: bool = False,
    ) -> list[StoredEvent]:
        """Tell the shopper what became of an action outside a reply (an agent approved or
        rejected it, the offer expired; issue #19): its ``action`` event and, with
        ``text``, a short bot message (a complete ``done`` answering nothing), in one
        transaction. Stored whoever owns the conversation: it reports what happened to the
        order, it is not the bot joining in. An outcome the log already tells is not
        stored again. ``internal``: the event is for agents only (no text then)."""
        return (await self.write(conv, store_action_outcome, conv.id, action, text,
                                 internal=internal))[0]

    async def expire_action(
        self, conv: ConversationRef, actions: ActionService, action_id: str
    ) -> Outcome | None:
        """Expire a proposal of the conversation that nobody answered
        (:meth:`ActionService.expire_in`) and store its ``action`` event (``expired``), in
        one transaction, so the card says so; an agent's unanswered preview is told to
        agents only. None, and nothing stored, when it was not due or no longer
        ``proposed`` (answered meanwhile, or expired by another process's sweep)."""

        def fn(session: Session) -> tuple[Outcome | None, list[StoredEvent]]:
            outcome = actions.expire_in(session, action_id)
            if outcome is None:
                return None, []
            stored, _ = store_action_outcome(session, conv.id, outcome.to_event(),
                                             internal=outcome.proposed_by == "agent")
            return outcome, stored

        return (await self.write(conv, fn))[0]

    async def told_actions(self, conv: ConversationRef) -> set[tuple[str, str]]:
        """The ``(action id, status)`` pairs the conversation's log already tells."""
        return await self.run(told_actions, conv.id)

    async def add_agent_message(
        self,
        conv: ConversationRef,
        text: str,
        *,
        agent_id: int | None,
        agent_name: str,
        internal: bool = False,
    ) -> StoredEvent:
        """Store an agent message (``agent_message``) or an internal note (``note``)."""
        message_id = f"a_{secrets.token_urlsafe(8)}"
        kind = chat.Note if internal else chat.AgentMessage
        event = NewEvent.of(
            kind(id=message_id, text=text, agent=agent_name, at=now_iso()), internal=internal
        )

        def fn(session: Session) -> tuple[StoredEvent, list[StoredEvent]]:
            ev = append_events(session, conv.id, [event])[0]
            session.add(
                ChatMessage(
                    conversation_id=conv.id,
                    public_id=message_id,
                    role="agent",
                    text=text,
                    internal=internal,
                    agent_id=agent_id,
                    author=agent_name,
                    seq=ev.seq,
                )
            )
            return ev, [ev]

        return (await self.write(conv, fn))[0]

    async def transition(
        self, conv: ConversationRef, action: ownership.Action, **kwargs: Any
    ) -> ownership.Transition:
        """Change ownership (checked, optimistic) and store the matching ``status`` event.

        A takeover also stops the bot's reply in flight in this process at once; other
        processes' bots stop at their next token write (it is refused in SQL).
        """
        move, _ = await self.write(conv, transition_with_event, conv, action, **kwargs)
        if move.new_state == ownership.AGENT:
            self.hub.cancel_reply(conv.id, "takeover")
        return move

    async def record_feedback(
        self, conv: ConversationRef, reply_id: str, rating: int, comment: str
    ) -> None:
        """Save a thumbs up/down on a bot reply; ``NotFoundError`` for an unknown reply."""

        def fn(session: Session) -> None:
            result = session.execute(
                update(ChatMessage)
                .where(
                    ChatMessage.conversation_id == conv.id,
                    ChatMessage.role == "bot",
                    ChatMessage.public_id == reply_id,
                )
                .values(rating=rating, feedback_comment=comment)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise NotFoundError(f"no reply {reply_id!r} in this conversation")

        await self.run(fn)

    async def end(self, conv: ConversationRef, rating: int | None, comment: str) -> None:
        """The shopper closes the conversation (resolve) with an optional CSAT rating."""

        def fn(session: Session) -> tuple[None, list[StoredEvent]]:
            session.execute(
                update(Conversation)
                .where(Conversation.id == conv.id)
                .values(csat_rating=rating, csat_comment=comment)
                .execution_options(synchronize_session=False)
            )
            state = session.scalar(select(Conversation.state).where(Conversation.id == conv.id))
            if state == RESOLVED:
                return None, []
            return None, transition_with_event(session, conv, ownership.Action.RESOLVE)[1]

        await self.write(conv, fn, state=RESOLVED)

    async def add_verified_orders(
        self, conv: ConversationRef, numbers: frozenset[str], state: str
    ) -> list[StoredEvent]:
        """Remember orders a guest proved; one ``verified`` status event per new order."""

        def fn(session: Session) -> tuple[None, list[StoredEvent]]:
            known = set(
                session.scalars(
                    select(GuestVerification.order_number).where(
                        GuestVerification.conversation_id == conv.id
                    )
                )
            )
            new = sorted(n for n in numbers if n not in known)
            for number in new:
                session.add(GuestVerification(conversation_id=conv.id, order_number=number))
            events = [status_event("verified", state, text=f"Order {n} verified.") for n in new]
            return None, append_events(session, conv.id, events)

        return (await self.write(conv, fn))[1]


def store_action_outcome(
    session: Session, conversation_id: int, action: Mapping[str, Any], text: str = "",
    *, internal: bool = False,
) -> tuple[list[StoredEvent], list[StoredEvent]]:
    """:meth:`ConversationService.add_action_outcome` in the caller's transaction (the CLI
    uses it directly; another process's sockets see the events through the log).
    ``internal``: for agents only (an agent's own preview the shopper never saw)."""
    outcome = chat.action_event(action)
    if outcome is None:
        raise ValueError(f"not an action outcome: {action!r}")
    stored = append_action_events(
        session, conversation_id, [NewEvent.of(outcome, internal=internal)])
    if text:
        reply_id = new_public_id("r")
        done = append_events(session, conversation_id, [NewEvent.of(
            chat.Done(reply_id=reply_id, text=text, at=now_iso()), reply_id=reply_id
        )])
        session.add(ChatMessage(
            conversation_id=conversation_id, public_id=reply_id, role="bot", text=text,
            status="complete", seq=done[-1].seq, reason=f"action_{outcome.status}",
        ))
        stored += done
    return stored, stored
