"""What a chat session asks its pump to do: requests with a result, and outputs.

A session generator yields one of these at a time; the pump performs it (through a narrow
service, the hub or the socket) and sends the result back at the same ``yield`` (``None``
for outputs), or throws the exception the service raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatbot.conversations.log import ConversationRef
from chatbot.conversations.ownership import Action

# ---- requests: the pump performs them and sends the result back ---------------------------


@dataclass(frozen=True)
class FrameAllowed:
    """Does this frame fit the connection's and the address's frame rates? -> bool"""


@dataclass(frozen=True)
class FindStore:
    """The store whose widget key (or name) is ``key`` -> ``StoreInfo | None``."""

    key: str


@dataclass(frozen=True)
class FindCustomer:
    """The store's customer with this source id -> ``(customer id, first name) | None``."""

    store_id: int
    customer: str


@dataclass(frozen=True)
class FindConversation:
    """The conversation if this caller may resume it -> ``ConversationRef | None``."""

    store_id: int
    public_id: str
    customer_id: int | None
    resume_token: str | None


@dataclass(frozen=True)
class IdTaken:
    """Does any store have a conversation with this public id? -> bool"""

    public_id: str


@dataclass(frozen=True)
class CreateConversation:
    """Store the conversation a ``welcome`` announced -> ``ConversationRef``."""

    store_id: int
    customer_id: int | None
    public_id: str
    resume_token: str | None


@dataclass(frozen=True)
class Follow:
    """Subscribe to the conversation's live events (queued until :class:`StartPump`)."""

    conv: ConversationRef


@dataclass(frozen=True)
class Replay:
    """Stored events after ``after_seq`` -> ``(events, high-water seq)``; the pump also
    records the high-water mark for an event-log poller."""

    conv: ConversationRef
    after_seq: int


@dataclass(frozen=True)
class Fresh:
    """The conversation as the database has it now -> ``ConversationRef``."""

    conv: ConversationRef


@dataclass(frozen=True)
class MessageAllowed:
    """Does one more message fit the connection's and the address's message rates? -> bool"""


@dataclass(frozen=True)
class HandoffAllowed:
    """May this address create one more waiting conversation now (counts it)? -> bool"""


@dataclass(frozen=True)
class CanQueue:
    """Is there room in the conversation's reply queue? -> bool"""

    conv: ConversationRef


@dataclass(frozen=True)
class StoreMessage:
    """Store a shopper message and its ack -> ``(ack StoredEvent, duplicate)``."""

    conv: ConversationRef
    id: str
    text: str


@dataclass(frozen=True)
class SubmitReply:
    """Queue the stored message for a bot reply (and count it)."""

    conv: ConversationRef
    id: str
    text: str
    seq: int
    # A ``confirm`` frame's (action id, accept): the reply answers that proposal
    # (``AnswerRequest.confirm``); ``text`` is what the transcript shows.
    confirm: tuple[str, bool] | None = None


@dataclass(frozen=True)
class CheckAction:
    """Is ``action_id`` a proposal of this conversation the shopper can still answer?
    -> None; raises ``ActionIdError`` (``unknown_action``, ``action_expired``,
    ``action_used``) otherwise. Reads only: nothing changes."""

    conv: ConversationRef
    action_id: str


@dataclass(frozen=True)
class PublishTyping:
    """Tell the agents following the conversation that the shopper types (or stopped)."""

    conv: ConversationRef
    active: bool


@dataclass(frozen=True)
class RecordFeedback:
    """Save a rating of a bot reply; raises ``NotFoundError`` for an unknown reply."""

    conv: ConversationRef
    reply_id: str
    rating: int
    comment: str


@dataclass(frozen=True)
class StopReply:
    """Stop the bot's reply in flight (``reply_id`` None: whichever one)."""

    conv: ConversationRef
    reason: str
    reply_id: str | None = None


@dataclass(frozen=True)
class EndConversation:
    """Resolve the conversation with the shopper's optional rating."""

    conv: ConversationRef
    rating: int | None
    comment: str


@dataclass(frozen=True)
class Transition:
    """Change the conversation's owner; raises ``ConflictError`` when another writer won."""

    conv: ConversationRef
    action: Action
    reason: str


# ---- outputs: the pump does them and sends back None --------------------------------------


@dataclass(frozen=True)
class Send:
    """Write one frame. ``error_code`` is set for ``error`` events (counted in metrics; a
    closed connection is ignored for them)."""

    frame: str
    error_code: str | None = None


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True)
class StartPump:
    """Start forwarding the followed conversation's live events (after ``welcome``)."""


Effect = (
    FrameAllowed | FindStore | FindCustomer | FindConversation | IdTaken | CreateConversation
    | Follow | Replay | Fresh | MessageAllowed | HandoffAllowed | CanQueue | StoreMessage
    | SubmitReply | PublishTyping | RecordFeedback | StopReply | EndConversation | Transition
    | CheckAction | Send | Close | StartPump
)
