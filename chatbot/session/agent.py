"""The console socket's session (``/ws/agent``): its state and rules, without I/O.

What a signed-in agent may do and see is decided here and unit-tested without a socket:
who may hand a conversation back, reply to the shopper or show typing; which errors end
the connection; what a live item of the open conversation becomes (each stored event once,
notes flagged ``internal``, shopper-only items never); which stored events change an inbox
row; what a revoked store takes away. :class:`~chatbot.server.agent_socket.AgentSocket`
does the I/O around it: the auth frame, the hub subscriptions, the inbox debounce, the
copilot stream, the periodic session check.

Phases::

    AWAITING_AUTH --signed in--> READY --logout, expiry, removed account--> CLOSED
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from chatbot.agents.authz import Principal
from chatbot.conversations.hub import HubItem
from chatbot.conversations.log import ConversationRef
from chatbot.conversations.models import AGENT
from chatbot.errors import AuthError, ChatbotError
from chatbot.protocol import agent as proto
from chatbot.protocol.common import ErrorCode

# Stored events that change an inbox row (tokens do not: the preview changes on ``done``).
ROW_EVENTS = frozenset({"ack", "done", "agent_message", "note", "status"})
# Stored events that change a store's approval queue (an action awaiting approval, an
# agent's decision, an expiry).
QUEUE_EVENTS = frozenset({"action"})
# Auth errors after which the socket is closed (1008) instead of answering with an error.
SESSION_ENDED = frozenset({ErrorCode.UNAUTHORIZED, "session_expired"})


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


class AgentSession:
    """One console connection: who is signed in, the open conversation, what it has seen."""

    def __init__(self) -> None:
        self.phase = Phase.AWAITING_AUTH
        self.token: str | None = None
        self.principal: Principal | None = None
        self.conv: ConversationRef | None = None
        self.delivered = 0  # highest stored seq of the open conversation sent

    # ---- the session ---------------------------------------------------------------------

    def signed_in(self, token: str, principal: Principal) -> None:
        self.phase, self.token, self.principal = Phase.READY, token, principal

    def ends_session(self, exc: AuthError) -> bool:
        """Whether this auth error closes the socket (no session any more)."""
        if exc.code in SESSION_ENDED:
            self.phase = Phase.CLOSED
            return True
        return False

    @staticmethod
    def error_ref(msg: proto.ClientMessage) -> tuple[str, str | None]:
        """An error's ``ref`` (the message id, else its type) and ``conversation_id``."""
        ref = getattr(msg, "id", None) or proto.message_type(msg)
        return ref, getattr(msg, "conversation_id", None)

    def _me(self) -> Principal:
        if self.principal is None:
            raise AuthError("log in first (send 'auth')", code=ErrorCode.UNAUTHORIZED)
        return self.principal

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

    def check_configure_actions(self) -> None:
        """Only admins change a store's action modes (auto / approval / off, issue #19);
        any agent of the store sees the queue, approves and rejects."""
        if not self._me().is_admin:
            raise AuthError("only admins change the action modes", code=ErrorCode.FORBIDDEN)

    def shows_typing(self, conv: ConversationRef, owner_id: int | None) -> bool:
        """Only the owner's typing is shown to the shopper (others': nothing to report)."""
        return conv.state == AGENT and owner_id == self._me().agent_id

    def revoked(self, principal: Principal, inbox_store_id: int | None) -> tuple[bool, str | None]:
        """After a session check: drop the inbox (True) and close the open conversation
        (its public id) when the agent lost access to their store."""
        self.principal = principal
        drop_inbox = inbox_store_id is not None and not principal.can_access(inbox_store_id)
        closed = None
        if self.conv is not None and not principal.can_access(self.conv.store_id):
            closed = self.conv.public_id
            self.close_conversation()
        return drop_inbox, closed

    # ---- the open conversation -------------------------------------------------------------

    def open(self, conv: ConversationRef, high: int) -> None:
        """Follow ``conv``; the replay sent reached ``high``."""
        self.conv, self.delivered = conv, high

    def close_conversation(self) -> None:
        self.conv, self.delivered = None, 0

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

    @staticmethod
    def changes_inbox_row(item: HubItem) -> bool:
        return item.stored is not None and item.stored.kind in ROW_EVENTS

    @staticmethod
    def changes_action_queue(item: HubItem) -> bool:
        return item.stored is not None and item.stored.kind in QUEUE_EVENTS
