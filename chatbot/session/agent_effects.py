"""What a console session asks its pump to do: requests with a result, and outputs.

The console's counterpart of :mod:`chatbot.session.effects` (whose :class:`Send`,
:class:`Close`, :class:`FrameAllowed`, :class:`Fresh` and :class:`StopReply` it shares). An
:class:`~chatbot.session.agent.AgentSession` generator yields one of these at a time; the
pump (:class:`~chatbot.server.agent_socket.AgentSocket`) performs it through the narrow
services (:class:`~chatbot.server.agent_services.AgentServices`), the hub or its own tasks,
and sends the result back at the same ``yield`` (``None`` for outputs), or throws the
exception the service raised.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from chatbot.conversations.log import ConversationRef
from chatbot.conversations.ownership import Action
from chatbot.protocol import agent as proto
from chatbot.protocol import chat
from chatbot.session.effects import Close, FrameAllowed, Fresh, Send, StopReply

# ---- requests: the pump performs them and sends the result back ---------------------------


@dataclass(frozen=True)
class SignIn:
    """The session token's principal and its stores -> ``(Principal, [{name, key, title}])``;
    raises ``AuthError`` (unknown, expired or ended session)."""

    token: str


@dataclass(frozen=True)
class Authorize:
    """The session still lives (and may see ``store_id``) -> a fresh ``Principal``; raises
    ``AuthError`` (``unauthorized``, ``session_expired``, ``forbidden``)."""

    token: str | None
    store_id: int | None = None


@dataclass(frozen=True)
class LookupStore:
    """A store by name or widget key -> ``(store id, name) | None``."""

    key: str


@dataclass(frozen=True)
class LookupConversation:
    """A fresh snapshot of a conversation -> ``ConversationRef``; raises ``NotFoundError``."""

    public_id: str


@dataclass(frozen=True)
class OwnerId:
    """The owning agent's id -> ``int | None``."""

    conversation_id: int


@dataclass(frozen=True)
class Owner:
    """The owning agent -> ``{id, name} | None``."""

    conversation_id: int


@dataclass(frozen=True)
class InboxSnapshot:
    """One filter and search of a store's inbox -> ``(rows, counts per filter)``."""

    store_id: int
    agent_id: int
    filter: str
    q: str


@dataclass(frozen=True)
class InboxUpdates:
    """Fresh rows of these conversations -> ``([(row, still matches)], counts)``."""

    store_id: int
    ids: Sequence[int]
    agent_id: int
    filter: str
    q: str


@dataclass(frozen=True)
class MarkRead:
    """The agent has read the conversation up to now."""

    agent_id: int
    conversation_id: int


@dataclass(frozen=True)
class Transcript:
    """The whole stored log, notes included -> ``(events, high-water seq)``; the pump also
    records the high-water mark for an event-log poller."""

    conv: ConversationRef


@dataclass(frozen=True)
class Details:
    """The opened conversation's panel -> ``{store, customer (with its order actions),
    owner, summary}``."""

    conv: ConversationRef


@dataclass(frozen=True)
class AgentTransition:
    """Change the conversation's owner as this agent; raises ``ConflictError`` or
    ``NotAllowedError`` when the ownership state machine refuses."""

    conv: ConversationRef
    action: Action
    agent_id: int
    agent_name: str


@dataclass(frozen=True)
class AgentMessage:
    """Store an agent's message to the shopper (``internal``: a note only agents see)."""

    conv: ConversationRef
    text: str
    agent_id: int
    agent_name: str
    internal: bool = False


@dataclass(frozen=True)
class Publish:
    """Send a live event that is not stored (the agent's typing indicator) to the
    conversation's followers."""

    conv: ConversationRef
    event: chat.Status


@dataclass(frozen=True)
class ApplyTeam:
    """An admin's team action -> the team's rows after it; raises ``AuthError``."""

    token: str | None
    action: proto.ListAgents | proto.AddAgent | proto.RemoveAgent | proto.SetAgentStores


@dataclass(frozen=True)
class ActionQueue:
    """A store's approval queue -> ``{"pending": [...], "modes": {...}}``."""

    store_id: int


@dataclass(frozen=True)
class SetModes:
    store_id: int
    modes: dict[str, str]
    agent: str


@dataclass(frozen=True)
class Approve:
    """Approve a proposal awaiting approval (the shopper is told)."""

    store_id: int
    action_id: str
    agent: str


@dataclass(frozen=True)
class Reject:
    """Reject a proposal awaiting approval (the shopper is told)."""

    store_id: int
    action_id: str
    agent: str
    reason: str


@dataclass(frozen=True)
class Propose:
    """An agent's own action for the customer -> the preview (``action_preview.action``)."""

    conv: ConversationRef
    kind: str
    params: dict[str, Any]
    agent: str


@dataclass(frozen=True)
class AnswerProposal:
    """The agent's yes / no to their preview -> what became of it (``action_preview.action``)."""

    conv: ConversationRef
    action_id: str
    accept: bool
    agent: str


# ---- outputs: the pump does them and sends back None --------------------------------------


@dataclass(frozen=True)
class FollowInbox:
    """Subscribe to the store's live items (queued until :class:`StartInboxPump`)."""

    store_id: int


@dataclass(frozen=True)
class StartInboxPump:
    """Start feeding the followed store's items to :meth:`AgentSession.inbox_item`."""


@dataclass(frozen=True)
class StopInbox:
    """Stop following the store's inbox (and its pump)."""


@dataclass(frozen=True)
class FollowConversation:
    """Subscribe to the conversation's live items (queued until :class:`StartConversationPump`)."""

    conv: ConversationRef


@dataclass(frozen=True)
class StartConversationPump:
    """Start feeding the followed conversation's items to :meth:`AgentSession.conversation_item`."""


@dataclass(frozen=True)
class StopConversation:
    """Stop following the open conversation (and its pump)."""


@dataclass(frozen=True)
class FlushRows:
    """Inbox rows changed: run :meth:`AgentSession.flush_rows` soon (bursts coalesce)."""


@dataclass(frozen=True)
class FlushActions:
    """The followed approval queue changed: run :meth:`AgentSession.send_actions` soon."""


@dataclass(frozen=True)
class StartSuggestion:
    """Stream a copilot suggestion for ``conv``, replacing the one in flight."""

    conv: ConversationRef


@dataclass(frozen=True)
class RecheckPeers:
    """The team changed: every other console socket of this process checks its session now."""


AgentEffect = (
    SignIn | Authorize | LookupStore | LookupConversation | OwnerId | Owner | InboxSnapshot
    | InboxUpdates | MarkRead | Transcript | Details | Fresh | AgentTransition | StopReply
    | AgentMessage | Publish | ApplyTeam | ActionQueue | SetModes | Approve | Reject | Propose
    | AnswerProposal | FrameAllowed | Send | Close | FollowInbox | StartInboxPump | StopInbox
    | FollowConversation | StartConversationPump | StopConversation | FlushRows | FlushActions
    | StartSuggestion | RecheckPeers
)

# What an AgentSession step is: a generator of effects, each answered at its ``yield``.
Steps = Generator[AgentEffect, Any, None]
