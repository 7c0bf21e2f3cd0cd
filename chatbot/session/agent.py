"""The console socket's session (``/ws/agent``): a state machine with no I/O.

Like :mod:`chatbot.session.chat`, it is fed frames and the live items of the inbox and the
conversation it follows, and answers with effects (:mod:`chatbot.session.agent_effects`):
a decision that needs the database yields a request and gets the result (or the service's
exception) back at the same ``yield``. So sign-in, the authorisation of every action
against a fresh session (a logout, an expiry or a revoked store bites on the next frame),
ownership, replies, what each live item becomes and which errors end the connection are
unit-tested with scripted results (``tests/unit/test_agent_session.py``).
:class:`~chatbot.server.agent_socket.AgentSocket` is the pump: timers, hub subscriptions,
the inbox debounce and the copilot stream. The followed inbox is
:mod:`chatbot.session.agent_inbox`'s part of the session, the approval queue and an agent's
own order actions :mod:`chatbot.session.agent_actions`'s.

Phases::

    AWAITING_AUTH --live session (cookie or auth frame)--> READY --logout, expiry--> CLOSED
          \\--no token in time, a cross-site cookie, a dead token--> CLOSED
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from chatbot.agents.authz import Principal
from chatbot.conversations.hub import HubItem
from chatbot.conversations.log import ConversationRef
from chatbot.conversations.models import AGENT
from chatbot.conversations.ownership import Action
from chatbot.errors import AuthError, ChatbotError, NotFoundError, ProtocolError
from chatbot.protocol import agent as proto
from chatbot.protocol import chat
from chatbot.protocol.common import CloseCode, ErrorCode
from chatbot.session import agent_effects as ax
from chatbot.session.agent_actions import ActionsMixin, AgentActionMessage, StoreActionMessage
from chatbot.session.agent_effects import Steps
from chatbot.session.agent_inbox import InboxMixin, InboxView

log = logging.getLogger(__name__)

# Auth errors after which the socket is closed (1008) instead of answering with an error.
SESSION_ENDED = frozenset({ErrorCode.UNAUTHORIZED, "session_expired"})
LOG_IN_FIRST = "log in first (send 'auth')"
REVOKED = "you no longer have access to this store"
OWNERSHIP: dict[type[proto.ConversationAction], Action] = {
    proto.TakeOver: Action.TAKE_OVER,
    proto.HandBack: Action.HAND_BACK,
    proto.Resolve: Action.RESOLVE,
    proto.Reopen: Action.REOPEN,
}

TeamMessage = proto.ListAgents | proto.AddAgent | proto.RemoveAgent | proto.SetAgentStores


class Phase(enum.Enum):
    AWAITING_AUTH = "awaiting_auth"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True)
class Forward:
    """A live item as the console's ``event``; ``with_owner``: look the owner up first
    (an ownership change), and send it along."""

    event: dict[str, Any]
    with_owner: bool = False


class AgentSession(InboxMixin, ActionsMixin):
    """One console connection: who is signed in, what it follows, what it has seen."""

    def __init__(self, *, origin: str | None = None, host: str = "") -> None:
        self.origin = origin  # the upgrade request's Origin and Host (cookie sign-in only)
        self.host = host
        self.phase = Phase.AWAITING_AUTH
        self.token: str | None = None
        self.principal: Principal | None = None
        self.inbox: InboxView | None = None
        self.pending: set[int] = set()  # ids of inbox rows to send again
        self.actions_store: tuple[int, str] | None = None  # (id, name): the approval queue shown
        self.conv: ConversationRef | None = None  # the open conversation
        self.delivered = 0  # highest stored seq of the open conversation sent

    # ---- signing in ----------------------------------------------------------------------

    def start(self, cookie: str | None) -> Steps:
        """The upgrade request: sign in with its session cookie, else wait for ``auth``."""
        if cookie is None:
            return
        if not self._same_origin():
            # A page on another site opened the socket with the agent's cookie.
            yield from self.refuse(
                ErrorCode.FORBIDDEN, "cross-site console connections are refused"
            )
            return
        yield from self._sign_in(cookie)

    def auth_timeout(self) -> Steps:
        yield from self.refuse(ErrorCode.UNAUTHORIZED, LOG_IN_FIRST)

    def _same_origin(self) -> bool:
        if self.origin is None:
            return True  # not a browser: cross-site pages always send Origin
        return urlsplit(self.origin).netloc.lower() == self.host.lower()

    def _sign_in(self, token: str) -> Steps:
        try:
            principal, stores = yield ax.SignIn(token)
        except AuthError as exc:
            yield from self.refuse(exc.code, exc.message)
            return
        self.signed_in(token, principal)
        yield ax.Send(proto.encode(proto.Ready(agent=principal.as_json(), stores=stores)))

    def signed_in(self, token: str, principal: Principal) -> None:
        self.phase, self.token, self.principal = Phase.READY, token, principal

    def refuse(self, code: str, message: str) -> Steps:
        """An ``error``, then close (1008): the connection has no live session."""
        self.phase = Phase.CLOSED
        yield self.error(code, message)
        yield ax.Close(CloseCode.POLICY_VIOLATION, code)

    def ends_session(self, exc: AuthError) -> bool:
        """Whether this auth error closes the socket (no session any more)."""
        if exc.code in SESSION_ENDED:
            self.phase = Phase.CLOSED
            return True
        return False

    def check_session(self) -> Steps:
        """Re-check the session now (a timer, a team change): close the socket if it ended,
        drop the inbox and the conversation of a store the agent may no longer see."""
        try:
            principal = yield from self._authorize()
        except AuthError as exc:
            yield from self.refuse(exc.code, exc.message)
            return
        if self.inbox is not None and not principal.can_access(self.inbox.store_id):
            self.inbox = None
            yield ax.StopInbox()
            yield self.error(ErrorCode.FORBIDDEN, REVOKED, "subscribe_inbox")
        if self.conv is not None and not principal.can_access(self.conv.store_id):
            closed = self.conv.public_id
            yield from self._close_conversation()
            yield self.error(ErrorCode.FORBIDDEN, REVOKED, "open", closed)

    # ---- frames in -----------------------------------------------------------------------

    def receive_frame(self, frame: str | bytes) -> Steps:
        """One frame from the console (before sign-in, only ``auth`` is accepted)."""
        if self.phase is Phase.CLOSED:
            return
        if not (yield ax.FrameAllowed()):
            yield self.error(ErrorCode.RATE_LIMITED, "too many frames; slow down")
            return
        try:
            msg = proto.decode(frame)
        except ProtocolError as exc:
            yield self.error(exc.code, exc.message)
            return
        if self.phase is Phase.READY:
            yield from self.receive(msg)
        elif isinstance(msg, proto.Auth):
            yield from self._sign_in(msg.token)
        else:
            yield from self.refuse(ErrorCode.UNAUTHORIZED, LOG_IN_FIRST)

    def receive(self, msg: proto.ClientMessage) -> Steps:
        """One decoded message of a signed-in console; failures become ``error`` events that
        name the message (its ``id``, else its type) and its conversation."""
        ref, conversation_id = self.error_ref(msg)
        try:
            yield from self._handle(msg)
        except AuthError as exc:
            if self.ends_session(exc):
                yield from self.refuse(exc.code, exc.message)
            else:
                yield self.error(exc.code, exc.message, ref, conversation_id)
        except ChatbotError as exc:
            yield self.error(exc.code, exc.message, ref, conversation_id)
        except Exception:
            log.exception("console action %s failed", type(msg).__name__)
            yield self.error(ErrorCode.INTERNAL_ERROR, "something went wrong on our side", ref)

    def error(
        self, code: str, message: str, ref: str | None = None, conversation_id: str | None = None
    ) -> ax.Send:
        return ax.Send(proto.encode(proto.Error(code, message, ref, conversation_id)), code)

    @staticmethod
    def error_ref(msg: proto.ClientMessage) -> tuple[str, str | None]:
        """An error's ``ref`` (the message id, else its type) and ``conversation_id``."""
        ref = getattr(msg, "id", None) or proto.message_type(msg)
        return ref, getattr(msg, "conversation_id", None)

    def _handle(self, msg: proto.ClientMessage) -> Steps:  # noqa: C901 (one branch per type)
        if isinstance(msg, proto.Auth):
            yield self.error(ErrorCode.ALREADY_STARTED, "this connection is already signed in")
        elif isinstance(msg, proto.SubscribeInbox):
            yield from self._subscribe(msg)
        elif isinstance(msg, proto.Open):
            yield from self._open((yield from self._conversation(msg.conversation_id)))
        elif isinstance(msg, proto.Close):
            if self.conv is not None and self.conv.public_id == msg.conversation_id:
                yield from self._close_conversation()
        elif isinstance(msg, proto.TakeOver | proto.HandBack | proto.Resolve | proto.Reopen):
            yield from self._ownership(msg, OWNERSHIP[type(msg)])
        elif isinstance(msg, proto.Send):
            yield from self._reply(msg)
        elif isinstance(msg, proto.Note):
            conv = yield from self._conversation(msg.conversation_id)
            me = self._me()
            yield ax.AgentMessage(conv, msg.text, me.agent_id, me.name, internal=True)
        elif isinstance(msg, proto.Suggest):
            yield ax.StartSuggestion((yield from self._conversation(msg.conversation_id)))
        elif isinstance(msg, proto.Typing):
            yield from self._typing(msg)
        elif isinstance(msg, TeamMessage):
            yield from self._team(msg)
        elif isinstance(msg, StoreActionMessage):
            yield from self._store_actions(msg)
        elif isinstance(msg, AgentActionMessage):
            yield from self._agent_action(msg)
        elif isinstance(msg, proto.MarkRead):
            conv = yield from self._conversation(msg.conversation_id)
            yield ax.MarkRead(self._me().agent_id, conv.id)
            yield from self._queue_row(conv.id)

    # ---- authorisation -------------------------------------------------------------------

    def _me(self) -> Principal:
        if self.principal is None:
            raise AuthError(LOG_IN_FIRST, code=ErrorCode.UNAUTHORIZED)
        return self.principal

    def _authorize(self, store_id: int | None = None) -> Generator[Any, Any, Principal]:
        """Re-check the session (and access to ``store_id``) for one action."""
        principal: Principal = yield ax.Authorize(self.token, store_id)
        self.principal = principal
        return principal

    def _conversation(self, public_id: str) -> Generator[Any, Any, ConversationRef]:
        """A fresh snapshot of the conversation, after checking this agent may act on it."""
        conv: ConversationRef = yield ax.LookupConversation(public_id)
        try:
            yield from self._authorize(conv.store_id)
        except AuthError as exc:
            if exc.code != ErrorCode.FORBIDDEN:
                raise
            # Another store's conversation reads exactly like one that does not exist
            # (issue #18): agents cannot probe ids of stores they do not work in.
            raise NotFoundError(
                "no such conversation", code=ErrorCode.CONVERSATION_NOT_FOUND
            ) from None
        return conv

    def _store(self, key: str) -> Generator[Any, Any, tuple[int, str]]:
        """``(id, name)`` of the store named ``key``, after checking this agent works there."""
        store: tuple[int, str] | None = yield ax.LookupStore(key)
        if store is None:
            raise ChatbotError(f"no store {key!r}", code=ErrorCode.UNKNOWN_STORE)
        yield from self._authorize(store[0])
        return store

    # ---- who may do what -----------------------------------------------------------------

    def check_hand_back(self, conv: ConversationRef, owner_id: int | None) -> None:
        """Only the agent who owns it (or an admin) hands a conversation back."""
        me = self._me()
        if conv.state == AGENT and owner_id != me.agent_id and not me.is_admin:
            raise AuthError(
                "only the agent who owns it (or an admin) can hand it back",
                code=ErrorCode.FORBIDDEN,
            )

    def check_reply(self, conv: ConversationRef, owner_id: int | None) -> None:
        """Only the owning agent writes to the shopper, and only after taking over."""
        if conv.state != AGENT or owner_id != self._me().agent_id:
            raise ChatbotError(
                "take over the conversation before replying to the shopper",
                code=ErrorCode.NOT_ALLOWED,
            )

    def shows_typing(self, conv: ConversationRef, owner_id: int | None) -> bool:
        """Only the owner's typing is shown to the shopper (others': nothing to report)."""
        return conv.state == AGENT and owner_id == self._me().agent_id

    # ---- conversation actions ------------------------------------------------------------

    def _ownership(self, msg: proto.ConversationAction, action: Action) -> Steps:
        conv = yield from self._conversation(msg.conversation_id)
        me = self._me()
        if action is Action.HAND_BACK and conv.state == AGENT:
            self.check_hand_back(conv, (yield ax.OwnerId(conv.id)))
        yield ax.AgentTransition(conv, action, me.agent_id, me.name)
        if action is Action.TAKE_OVER:
            # Also stop a reply this process runs for the conversation (belt and braces:
            # the service's hub cancel does it, and SQL refuses later bot writes anyway).
            yield ax.StopReply(conv, "takeover")

    def _reply(self, msg: proto.Send) -> Steps:
        conv = yield from self._conversation(msg.conversation_id)
        me = self._me()
        self.check_reply(conv, (yield ax.OwnerId(conv.id)))
        yield ax.AgentMessage(conv, msg.text, me.agent_id, me.name)

    def _typing(self, msg: proto.Typing) -> Steps:
        conv = yield from self._conversation(msg.conversation_id)
        me = self._me()
        if not self.shows_typing(conv, (yield ax.OwnerId(conv.id))):
            return  # only the owner's typing is shown to the shopper; nothing to report
        kind = "typing" if msg.active else "idle"
        yield ax.Publish(conv, chat.Status(kind=kind, agent=me.name, state=AGENT))

    def _team(self, msg: TeamMessage) -> Steps:
        rows = yield ax.ApplyTeam(self.token, msg)
        yield ax.Send(proto.encode(proto.Agents(rows)))
        if not isinstance(msg, proto.ListAgents):
            # A removed account's sessions are gone, a store may be revoked: every console
            # socket of this process re-checks now, not at its next timer.
            yield ax.RecheckPeers()

    # ---- live items of the followed store ------------------------------------------------

    def inbox_item(self, item: HubItem) -> list[ax.AgentEffect]:
        """A live item of the followed store: which rows and queues to send again (soon)."""
        out: list[ax.AgentEffect] = []
        if self.changes_inbox_row(item):
            out += self._queue_row(item.conversation_id)
        if self.changes_action_queue(item) and self.actions_store is not None and (
            self.actions_store[0] == item.store_id
        ):
            out.append(ax.FlushActions())
        return out

    # ---- the open conversation -------------------------------------------------------------

    def _open(self, conv: ConversationRef) -> Steps:
        yield from self._close_conversation()
        self.open(conv, 0)
        # Follow before reading the log; the replay's high-water mark drops duplicates.
        yield ax.FollowConversation(conv)
        events, high = yield ax.Transcript(conv)
        details = yield ax.Details(conv)
        fresh = yield ax.Fresh(conv)
        self.delivered = high
        yield ax.Send(proto.encode(proto.Conversation(
            conversation_id=conv.public_id,
            store=details["store"],
            state=fresh.state,
            seq=high,
            events=[proto.conversation_event(e.kind, e.seq, e.payload, internal=e.internal)
                    for e in events],
            customer=details["customer"],
            owner=details["owner"],
            summary=details["summary"],
        )))
        yield ax.StartConversationPump()

    def open(self, conv: ConversationRef, high: int) -> None:
        """Follow ``conv``; the replay sent reached ``high``."""
        self.conv, self.delivered = conv, high

    def _close_conversation(self) -> Steps:
        yield ax.StopConversation()
        self.close_conversation()

    def close_conversation(self) -> None:
        self.conv, self.delivered = None, 0

    def conversation_item(self, item: HubItem) -> Steps:
        """A live item of the open conversation as an ``event`` frame (or nothing)."""
        conv = self.conv
        if conv is None or item.conversation_id != conv.id:
            return
        forward = self.forward(item)
        if forward is not None:
            owner = (yield ax.Owner(conv.id)) if forward.with_owner else None
            yield ax.Send(proto.encode(proto.Event(conv.public_id, forward.event, owner)))

    def conversation_fell_behind(self) -> Steps:
        """The conversation's live queue overflowed: send a fresh snapshot."""
        if self.conv is not None:
            yield from self.receive(proto.Open(self.conv.public_id))

    def forward(self, item: HubItem) -> Forward | None:
        """A live item of the open conversation for the console, or None (seen already,
        or meant for the shopper only). Notes are flagged ``internal``."""
        if item.stored is not None:
            event = item.stored
            if event.seq <= self.delivered:
                return None
            self.delivered = event.seq
            wire = proto.conversation_event(
                event.kind, event.seq, event.payload, internal=event.internal
            )
            return Forward(wire, event.kind == "status" and bool(event.payload.get("state")))
        if item.ephemeral is None or item.audience == "shopper":
            return None
        fields = dict(item.ephemeral)
        kind = fields.pop("type")
        return Forward(proto.conversation_event(kind, self.delivered, fields))

    # ---- the copilot ---------------------------------------------------------------------

    def suggestion_failed(self, conv: ConversationRef, exc: Exception) -> list[ax.Send]:
        """A copilot suggestion that could not be made, as an ``error`` (ref ``suggest``)."""
        if isinstance(exc, ChatbotError):
            return [self.error(exc.code, exc.message, "suggest", conv.public_id)]
        log.error("copilot failed for conversation %s", conv.public_id, exc_info=exc)
        return [self.error(ErrorCode.ANSWER_FAILED, "the copilot could not suggest a reply",
                           "suggest", conv.public_id)]


__all__ = ["AgentSession", "Forward", "InboxView", "Phase", "Steps"]
