"""The shopper socket's session (``/ws/chat``): a state machine with no I/O.

The session is fed frames (and the conversation's live events) and answers with *effects*.
A decision that needs the database is written as a generator: it yields a request
(:class:`FindStore`, :class:`Replay`, ...) and gets the result back at the same ``yield``,
so the hello, resume and identity policy reads top to bottom and runs in unit tests with
scripted results, without a socket or an event loop. Output effects (:class:`Send`,
:class:`Close`, :class:`StartPump`) are yielded the same way and get ``None`` back. An
exception raised while performing a request is thrown back in at its ``yield``.
:class:`~chatbot.server.chat_socket.ChatSocket` is the pump: it reads frames, performs each
effect through narrow services and writes what the session says to write.

Phases::

    AWAITING_HELLO --hello--> GREETING --welcome--> OPEN --close/timeout--> CLOSED
                                  \\--unknown store, origin not allowed--> CLOSED

In ``OPEN`` the connection is a guest's or a verified customer's (``verified``); the
conversation's owner (``bot`` -> ``waiting`` -> ``agent`` -> ``resolved``: handed over)
follows the stored status events the session forwards (``owner``), and ``replying`` is true
while a bot reply streams.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Generator
from typing import Any

from chatbot import identity
from chatbot.conversations.hub import HubItem, StoredEvent
from chatbot.conversations.log import ConversationRef
from chatbot.conversations.ownership import Action
from chatbot.errors import ChatbotError, ConflictError, IdentityError, NotFoundError, ProtocolError
from chatbot.protocol import chat
from chatbot.protocol.common import CloseCode, ErrorCode
from chatbot.session.effects import (
    CanQueue,
    CheckAction,
    Close,
    CreateConversation,
    Effect,
    EndConversation,
    FindConversation,
    FindCustomer,
    FindStore,
    Follow,
    FrameAllowed,
    Fresh,
    HandoffAllowed,
    IdTaken,
    MessageAllowed,
    PublishTyping,
    RecordFeedback,
    Replay,
    Send,
    StartPump,
    StopReply,
    StoreMessage,
    SubmitReply,
    Transition,
)

log = logging.getLogger(__name__)

_PUBLIC_ID = re.compile(r"c_[A-Za-z0-9_-]{16}")
_TOKEN = re.compile(r"r_[A-Za-z0-9_-]{32}")
# What the transcript shows for a ``confirm`` frame (issue #19), and the id of that
# shopper message: one per action, so a second confirm of the same proposal (a double
# click, another tab) is acknowledged again instead of answered twice.
CONFIRM_TEXT = {True: "Confirm", False: "Keep my order"}


def confirm_message_id(action_id: str) -> str:
    return f"k_{action_id}"


class Phase(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    GREETING = "greeting"  # hello received, welcome not sent yet
    OPEN = "open"
    CLOSED = "closed"


Steps = Generator[Effect, Any, None]


class ChatSession:
    """One shopper connection's state: phase, store, identity, conversation, delivered seq."""

    def __init__(
        self,
        *,
        origin: str | None,
        max_message_chars: int,
        new_conversation_id: Callable[[], str],
        new_resume_token: Callable[[], str],
    ) -> None:
        self.origin = origin
        self.max_message_chars = max_message_chars
        self._new_id = new_conversation_id
        self._new_token = new_resume_token
        self.phase = Phase.AWAITING_HELLO
        self.store: Any = None  # StoreInfo once the hello named a known store
        self.customer_id: int | None = None  # set: a verified customer
        self.conv: ConversationRef | None = None
        # A conversation announced in ``welcome`` but not stored yet: (public id, resume
        # token). It is stored on the first thing worth keeping (a message, a handoff),
        # so page views that never chat leave no rows and no empty inbox entries.
        self.unsaved: tuple[str, str | None] | None = None
        self.delivered = 0  # highest stored seq sent to this client
        self.owner = "bot"  # the conversation's owner as the client last heard it
        self.replying = False  # a bot reply is streaming to this client

    @property
    def verified(self) -> bool:
        return self.customer_id is not None

    # ---- frames in ---------------------------------------------------------------------

    def receive_frame(self, frame: str | bytes) -> Steps:
        """One text or binary frame from the client."""
        if not (yield FrameAllowed()):
            yield self.error(ErrorCode.RATE_LIMITED, "too many frames; slow down")
            return
        try:
            msg = chat.decode(frame)
        except ProtocolError as exc:
            yield self.error(exc.code, exc.message)
            return
        yield from self.receive(msg)

    def receive(self, msg: chat.ClientMessage) -> Steps:
        """One decoded client message."""
        if self.phase is Phase.AWAITING_HELLO:
            if isinstance(msg, chat.Hello):
                yield from self._hello(msg)
            else:
                yield self.error(ErrorCode.HELLO_REQUIRED, "send 'hello' first")
            return
        if self.phase is not Phase.OPEN:
            return
        try:
            yield from self._handle(msg)
        except ChatbotError as exc:
            yield self.error(exc.code, exc.message, getattr(msg, "id", None))
        except Exception:
            log.exception("handling %s failed", type(msg).__name__)
            yield self.error(ErrorCode.INTERNAL_ERROR, "something went wrong on our side")

    # ---- events out and timeouts ---------------------------------------------------------

    def forward(self, item: HubItem) -> list[Send]:
        """A live item of the followed conversation as frames for this client (or none):
        each stored event once, in seq order; agent-only items and notes never."""
        if item.stored is not None:
            event = item.stored
            if event.internal or event.seq <= self.delivered:
                return []
            self.delivered = event.seq
            self._observe(event.kind, event.payload)
            return [Send(chat.encode_logged(event.kind, event.seq, event.payload))]
        if item.ephemeral is None or item.audience == "agents":
            return []
        fields = dict(item.ephemeral)
        kind = fields.pop("type")
        self._observe(kind, fields)
        error_code = str(fields.get("code", "")) if kind == "error" else None
        return [Send(chat.encode_logged(kind, self.delivered, fields), error_code)]

    def hello_timeout(self) -> list[Effect]:
        self.phase = Phase.CLOSED
        return [
            self.error(ErrorCode.HELLO_REQUIRED, "no 'hello' received in time"),
            Close(CloseCode.POLICY_VIOLATION, "hello timeout"),
        ]

    def idle_timeout(self) -> list[Effect]:
        self.phase = Phase.CLOSED
        return [
            self.error(ErrorCode.IDLE_TIMEOUT, "closed after a long silence"),
            Close(CloseCode.GOING_AWAY, "idle timeout"),
        ]

    def fell_behind(self) -> list[Effect]:
        """The live queue overflowed: the client must resume from the log."""
        self.phase = Phase.CLOSED
        return [Close(CloseCode.TRY_AGAIN_LATER, "too slow; resume with last_seq")]

    def shutting_down(self) -> Send:
        return self.error(ErrorCode.SHUTTING_DOWN, "the server is restarting; reconnect shortly")

    def error(self, code: str, message: str, ref: str | None = None) -> Send:
        """An ``error`` event, stamped with the last delivered seq."""
        event = chat.Error(seq=self.delivered, code=code, message=message, ref=ref)
        return Send(chat.encode(event), code)

    def _observe(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "status":
            if fields.get("state"):
                self.owner = str(fields["state"])
            if fields.get("kind") == "thinking":
                self.replying = True
        elif kind == "token":
            self.replying = True
        elif kind == "done":
            self.replying = False

    # ---- hello: store, origin, identity, resume ---------------------------------------

    def _hello(self, hello: chat.Hello) -> Steps:
        self.phase = Phase.GREETING
        store = yield FindStore(hello.store)
        if store is None:
            yield from self._refuse(
                ErrorCode.UNKNOWN_STORE, f"no store with key {hello.store!r}", "unknown store"
            )
            return
        if store.allowed_origins and self.origin not in store.allowed_origins:
            yield from self._refuse(
                ErrorCode.ORIGIN_NOT_ALLOWED, "this page may not open the chat",
                "origin not allowed",
            )
            return
        self.store = store
        customer_id, name = yield from self._identity(hello.identity)
        self.customer_id = customer_id
        conv, resume_token, resumed = None, None, False
        if hello.conversation_id and not hello.new_conversation:
            conv = yield FindConversation(
                store.id, hello.conversation_id, customer_id, hello.resume_token
            )
            resumed = conv is not None
            if conv is not None:
                resume_token = hello.resume_token if conv.customer_id is None else None
            elif (yield from self._adoptable(hello)):
                # Announced earlier but never stored (no message yet): keep its id.
                resume_token = hello.resume_token if customer_id is None else None
                self.unsaved, resumed = (hello.conversation_id, resume_token), True
            else:
                yield self.error(
                    ErrorCode.CONVERSATION_NOT_FOUND,
                    "that conversation cannot be resumed here; starting a new one",
                )
        if conv is None and self.unsaved is None:
            resume_token = None if customer_id is not None else self._new_token()
            self.unsaved = (self._new_id(), resume_token)
        events: list[StoredEvent] = []
        high = 0
        if conv is not None:
            # Follow before reading the log: whatever commits in between arrives live and
            # is dropped by seq if the replay already had it.
            self.conv = conv
            self.owner = conv.state
            yield Follow(conv)
            events, high = yield Replay(conv, hello.last_seq or 0)
            self.delivered = high
        assert self.unsaved is not None or conv is not None
        welcome = chat.Welcome(
            seq=high,
            conversation_id=conv.public_id if conv else self.unsaved[0],  # type: ignore[index]
            state=conv.state if conv else "bot",
            resumed=resumed,
            events=[chat.logged(e.kind, e.seq, e.payload) for e in events],
            resume_token=resume_token,
            customer={"verified": customer_id is not None, "name": name},
            max_message_chars=self.max_message_chars,
        )
        yield Send(chat.encode(welcome))
        self.phase = Phase.OPEN
        if conv is not None:
            yield StartPump()  # only after welcome: live events follow it, never precede it

    def _refuse(self, code: str, message: str, reason: str) -> Steps:
        self.phase = Phase.CLOSED
        yield self.error(code, message)
        yield Close(CloseCode.POLICY_VIOLATION, reason)

    def _identity(self, token: str | None) -> Generator[Effect, Any, tuple[int | None, str]]:
        """``(customer id, name)`` of a valid identity token; ``(None, "")``: a guest."""
        if not token:
            return None, ""
        try:
            claim = identity.verify(self.store.identity_secret, token)
            found = yield FindCustomer(self.store.id, claim.customer)
            if found is None:
                raise IdentityError("the identity token names no customer of this store")
            return found  # type: ignore[no-any-return]
        except IdentityError as exc:
            yield self.error(ErrorCode.INVALID_IDENTITY, f"{exc.message}; continuing as guest")
            return None, ""

    def _adoptable(self, hello: chat.Hello) -> Generator[Effect, Any, bool]:
        """A well-formed id that no conversation has, with a proof for a future owner."""
        assert hello.conversation_id is not None
        if not _PUBLIC_ID.fullmatch(hello.conversation_id):
            return False
        if self.customer_id is None and not (
            hello.resume_token and _TOKEN.fullmatch(hello.resume_token)
        ):
            return False
        return not (yield IdTaken(hello.conversation_id))

    def _conversation(self) -> Generator[Effect, Any, ConversationRef]:
        """The stored conversation, creating it on first use."""
        if self.conv is None:
            assert self.store is not None and self.unsaved is not None
            public_id, token = self.unsaved
            conv = yield CreateConversation(self.store.id, self.customer_id, public_id, token)
            self.unsaved, self.conv, self.owner = None, conv, conv.state
            yield Follow(conv)
            # Another tab may have stored it first and written to it before we followed:
            # send what the log has (usually nothing), then go live.
            events, _ = yield Replay(conv, 0)
            for event in events:
                yield from self.forward(HubItem(conv.id, conv.store_id, stored=event))
            yield StartPump()
        return self.conv

    # ---- messages after hello ------------------------------------------------------------

    def _handle(self, msg: chat.ClientMessage) -> Steps:
        if isinstance(
            msg, chat.Handoff | chat.End | chat.Feedback | chat.Stop | chat.Confirm
        ) and not (yield MessageAllowed()):
            # Issue #18: every action a shopper can take spends from the message limits
            # (per connection and per address), not only messages.
            yield self.error(
                ErrorCode.RATE_LIMITED, "too many requests; wait a few seconds",
                getattr(msg, "id", None),
            )
            return
        if isinstance(msg, chat.Message):
            yield from self._message(msg)
        elif isinstance(msg, chat.Hello):
            yield self.error(ErrorCode.ALREADY_STARTED, "this connection already said hello")
        elif isinstance(msg, chat.Handoff):
            yield from self._handoff(msg)
        elif isinstance(msg, chat.Confirm):
            yield from self._confirm(msg)
        elif self.conv is None:
            # Nothing stored yet: no reply to rate or stop, nothing to close, nobody
            # watching the typing indicator.
            if isinstance(msg, chat.Feedback):
                raise NotFoundError(f"no reply {msg.reply_id!r} in this conversation")
        elif isinstance(msg, chat.Typing):
            yield PublishTyping(self.conv, msg.active)
        elif isinstance(msg, chat.Feedback):
            yield RecordFeedback(self.conv, msg.reply_id, msg.rating, msg.comment)
        elif isinstance(msg, chat.Stop):
            yield StopReply(self.conv, "stopped", msg.reply_id)
        elif isinstance(msg, chat.End):
            yield StopReply(self.conv, "ended")
            yield EndConversation(self.conv, msg.rating, msg.comment)

    def _message(self, msg: chat.Message) -> Steps:
        if len(msg.text) > self.max_message_chars:
            yield self.error(
                ErrorCode.MESSAGE_TOO_LONG,
                f"messages are limited to {self.max_message_chars} characters",
                msg.id,
            )
            return
        if not msg.text.strip():
            yield self.error(ErrorCode.EMPTY_MESSAGE, "the message is empty", msg.id)
            return
        if not (yield MessageAllowed()):
            yield self.error(
                ErrorCode.RATE_LIMITED, "too many messages; wait a few seconds", msg.id
            )
            return
        conv = yield from self._conversation()
        if not (yield CanQueue(conv)):
            yield self.error(
                ErrorCode.QUEUE_FULL, "please wait for the answer before sending more", msg.id
            )
            return
        ack, duplicate = yield StoreMessage(conv, msg.id, msg.text)
        if duplicate:
            # The client missed the first ack (reconnect): repeat it, store nothing.
            yield Send(chat.encode_logged(ack.kind, ack.seq, ack.payload))
            return
        yield SubmitReply(conv, msg.id, msg.text, ack.seq)

    def _confirm(self, msg: chat.Confirm) -> Steps:
        """The shopper's Confirm / Keep my order on a proposed action (issue #19): an open
        proposal of this conversation is answered by a bot reply, like a message; any
        other id (unknown, another store's or conversation's, expired, answered) gets an
        ``error`` and nothing changes."""
        if self.conv is None:
            yield self.error(ErrorCode.UNKNOWN_ACTION, "unknown action id", msg.action_id)
            return
        try:
            yield CheckAction(self.conv, msg.action_id)
        except ChatbotError as exc:
            yield self.error(exc.code, exc.message, msg.action_id)
            return
        if (yield Fresh(self.conv)).state == "agent":
            # The bot is silent while a person owns the conversation: nobody would run
            # the answer. The agent can run the action from the console.
            yield self.error(
                ErrorCode.NOT_ALLOWED,
                "a team member is handling this conversation; tell them your answer here",
                msg.action_id,
            )
            return
        if not (yield CanQueue(self.conv)):
            yield self.error(
                ErrorCode.QUEUE_FULL, "please wait for the answer before sending more",
                msg.action_id,
            )
            return
        text = CONFIRM_TEXT[msg.accept]
        ack, duplicate = yield StoreMessage(self.conv, confirm_message_id(msg.action_id), text)
        if duplicate:
            yield Send(chat.encode_logged(ack.kind, ack.seq, ack.payload))
            return
        yield SubmitReply(self.conv, ack.payload["id"], text, ack.seq,
                          confirm=(msg.action_id, msg.accept))

    def _handoff(self, msg: chat.Handoff) -> Steps:
        # A handoff makes a waiting conversation in the agents' inbox: at most so many per
        # address and hour (issue #18). Only a conversation the bot owns becomes one.
        makes_waiting = self.conv is None or (yield Fresh(self.conv)).state == "bot"
        if makes_waiting and not (yield HandoffAllowed()):
            yield self.error(
                ErrorCode.RATE_LIMITED,
                "too many requests for a person from your network; try again later "
                "or write your question here",
            )
            return
        conv = yield from self._conversation()
        for _ in range(3):
            fresh = yield Fresh(conv)
            if fresh.state != "bot":
                return  # already waiting for, or talking to, a person
            try:
                yield Transition(fresh, Action.REQUEST_HANDOFF, msg.reason or "asked in the widget")
                return
            except ConflictError as exc:
                if exc.code != "conflict":
                    raise
