"""Console socket (``/ws/agent``) messages: typed dataclasses, ``decode`` and ``encode``.

Sans-I/O like :mod:`chatbot.protocol.chat`: :func:`decode` turns one frame from the console
into a client message or raises :class:`~chatbot.errors.ProtocolError`; :func:`encode` turns
a server event into the text of one frame; :func:`decode_event` reads server frames back
(tests). The conversation payloads (inbox rows, transcript events, customer panel) are
plain JSON objects built by :mod:`chatbot.server.console_views`; their fields are listed
in ``docs/protocol.md`` ("Console socket").

The session token is never part of a URL: the socket authenticates with the
``chatbot_console`` cookie sent on the upgrade request, or with an ``auth`` first frame.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chatbot.errors import ProtocolError
from chatbot.protocol import chat
from chatbot.protocol.common import (
    MAX_ID_CHARS,
    MAX_TOKEN_CHARS,
    ErrorCode,
    decode_envelope,
    encode_frame,
    opt_bool,
    opt_str,
    req_bool,
    req_str,
)

# ---- client (console) -> server -------------------------------------------------------------

# Inbox filters: one status, "open" (everything not resolved), "mine" (owned by me) or "all".
INBOX_FILTERS = frozenset({"all", "open", "mine", "bot", "waiting", "agent", "resolved"})
MAX_QUERY_CHARS = 200
MAX_AGENT_TEXT_CHARS = 8000


@dataclass(frozen=True)
class Auth:
    """First frame when the upgrade request carried no session cookie."""

    token: str


@dataclass(frozen=True)
class SubscribeInbox:
    """Watch one store's conversations: a snapshot now, then ``inbox_update`` events."""

    store: str
    filter: str = "open"
    q: str = ""


@dataclass(frozen=True)
class ConversationAction:
    """A console message about one conversation (the subclasses below add no fields)."""

    conversation_id: str


class Open(ConversationAction):
    """Show one conversation (transcript, customer panel) and follow its live events."""


class Close(ConversationAction):
    """Stop following the open conversation."""


class TakeOver(ConversationAction):
    """The agent owns the conversation from now on; the bot goes silent at once."""


class HandBack(ConversationAction):
    """Give the conversation back to the bot."""


class Resolve(ConversationAction):
    """Close the conversation."""


class Reopen(ConversationAction):
    """Reopen a resolved conversation (to the bot)."""


@dataclass(frozen=True)
class Send:
    """A reply to the shopper; ``id`` is chosen by the console and comes back as an error's
    ``ref``."""

    conversation_id: str
    id: str
    text: str


@dataclass(frozen=True)
class Note:
    """An internal note: agents see it, the shopper never does."""

    conversation_id: str
    id: str
    text: str


class Suggest(ConversationAction):
    """Ask the copilot for a reply to the latest shopper message (streamed back)."""


@dataclass(frozen=True)
class Typing:
    """The owning agent is typing (``active``) or stopped: the shopper sees an indicator."""

    conversation_id: str
    active: bool = True


class MarkRead(ConversationAction):
    """Everything up to the conversation's latest event has been read by this agent."""


@dataclass(frozen=True)
class ListAgents:
    """Admins: the team (answered with ``agents``)."""


@dataclass(frozen=True)
class AddAgent:
    """Admins: create an account (password policy as ``chatbot agents add``)."""

    email: str
    password: str
    stores: list[str] = field(default_factory=list)
    admin: bool = False
    name: str = ""


@dataclass(frozen=True)
class RemoveAgent:
    """Admins: delete an account; its sessions end at once."""

    email: str


@dataclass(frozen=True)
class SetAgentStores:
    """Admins: the exact list of stores an agent works in."""

    email: str
    stores: list[str]


# ---- order actions (issue #19) ----

# Per store and action kind: the shopper's yes runs it (auto), an agent approves it first
# (approval), or the bot never offers it (off).
ACTION_MODES = frozenset({"auto", "approval", "off"})
MAX_ACTION_KINDS = 20
MAX_ACTION_PARAMS_CHARS = 4000


@dataclass(frozen=True)
class ListActions:
    """One store's approval queue and action modes (answered with ``actions``)."""

    store: str


@dataclass(frozen=True)
class ApproveAction:
    """Approve a proposal awaiting approval: checked again, then run; the shopper is told."""

    store: str
    action_id: str


@dataclass(frozen=True)
class RejectAction:
    """Reject a proposal awaiting approval (``declined`` with ``reason``); the shopper is
    told."""

    store: str
    action_id: str
    reason: str = ""


@dataclass(frozen=True)
class SetActionModes:
    """Admins: ``{kind: "auto" | "approval" | "off"}`` for one store."""

    store: str
    modes: dict[str, str]


@dataclass(frozen=True)
class ProposeAction:
    """An agent runs an action for the conversation's customer: the same checks and
    preview as the bot's proposal (answered with ``action_preview``)."""

    conversation_id: str
    kind: str
    params: dict[str, Any]


@dataclass(frozen=True)
class ConfirmAction:
    """The agent's own yes / no to the preview they asked for."""

    conversation_id: str
    action_id: str
    accept: bool


ClientMessage = (
    Auth | SubscribeInbox | Open | Close | TakeOver | HandBack | Resolve | Reopen | Send | Note
    | Suggest | Typing | MarkRead | ListAgents | AddAgent | RemoveAgent | SetAgentStores
    | ListActions | ApproveAction | RejectAction | SetActionModes | ProposeAction | ConfirmAction
)
MAX_STORES = 100


def _stores(o: dict[str, Any]) -> list[str]:
    value = o.get("stores", [])
    if (
        not isinstance(value, list)
        or len(value) > MAX_STORES
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_ID_CHARS for s in value)
    ):
        raise ProtocolError("field 'stores' must be a list of store names",
                            code=ErrorCode.BAD_MESSAGE)
    return list(dict.fromkeys(value))



def _modes(o: dict[str, Any]) -> dict[str, str]:
    value = o.get("modes")
    if (
        not isinstance(value, dict)
        or not 0 < len(value) <= MAX_ACTION_KINDS
        or not all(isinstance(k, str) and 0 < len(k) <= 40 for k in value)
        or not all(v in ACTION_MODES for v in value.values())
    ):
        raise ProtocolError(
            "field 'modes' must map action kinds to 'auto', 'approval' or 'off'",
            code=ErrorCode.BAD_MESSAGE,
        )
    return dict(value)


def _params(o: dict[str, Any]) -> dict[str, Any]:
    value = o.get("params", {})
    if not isinstance(value, dict):
        raise ProtocolError("field 'params' must be an object", code=ErrorCode.BAD_MESSAGE)
    if len(json.dumps(value)) > MAX_ACTION_PARAMS_CHARS:
        raise ProtocolError(
            f"field 'params' must be at most {MAX_ACTION_PARAMS_CHARS} characters of JSON",
            code=ErrorCode.BAD_MESSAGE,
        )
    return value


def _conversation_id(o: dict[str, Any]) -> str:
    return req_str(o, "conversation_id", max_chars=MAX_ID_CHARS)


def _text(o: dict[str, Any]) -> str:
    text = req_str(o, "text", max_chars=MAX_AGENT_TEXT_CHARS, allow_empty=True)
    if not text.strip():
        raise ProtocolError("field 'text' must not be blank", code=ErrorCode.EMPTY_MESSAGE)
    return text


def _subscribe(o: dict[str, Any]) -> SubscribeInbox:
    kind = opt_str(o, "filter", max_chars=20) or "open"
    if kind not in INBOX_FILTERS:
        raise ProtocolError(
            f"field 'filter' must be one of {', '.join(sorted(INBOX_FILTERS))}",
            code=ErrorCode.BAD_MESSAGE,
        )
    return SubscribeInbox(
        store=req_str(o, "store", max_chars=MAX_ID_CHARS),
        filter=kind,
        q=(opt_str(o, "q", max_chars=MAX_QUERY_CHARS) or "").strip(),
    )


_CLIENT: dict[str, Callable[[dict[str, Any]], ClientMessage]] = {
    "auth": lambda o: Auth(token=req_str(o, "token", max_chars=MAX_TOKEN_CHARS)),
    "subscribe_inbox": _subscribe,
    "open": lambda o: Open(_conversation_id(o)),
    "close": lambda o: Close(_conversation_id(o)),
    "take_over": lambda o: TakeOver(_conversation_id(o)),
    "hand_back": lambda o: HandBack(_conversation_id(o)),
    "resolve": lambda o: Resolve(_conversation_id(o)),
    "reopen": lambda o: Reopen(_conversation_id(o)),
    "send": lambda o: Send(
        _conversation_id(o), req_str(o, "id", max_chars=MAX_ID_CHARS), _text(o)
    ),
    "note": lambda o: Note(
        _conversation_id(o), req_str(o, "id", max_chars=MAX_ID_CHARS), _text(o)
    ),
    "suggest": lambda o: Suggest(_conversation_id(o)),
    "typing": lambda o: Typing(_conversation_id(o), opt_bool(o, "active", True)),
    "mark_read": lambda o: MarkRead(_conversation_id(o)),
    "list_agents": lambda o: ListAgents(),
    "add_agent": lambda o: AddAgent(
        email=req_str(o, "email", max_chars=320),
        password=req_str(o, "password", max_chars=1024),
        stores=_stores(o),
        admin=opt_bool(o, "admin"),
        name=opt_str(o, "name", max_chars=200) or "",
    ),
    "remove_agent": lambda o: RemoveAgent(req_str(o, "email", max_chars=320)),
    "set_agent_stores": lambda o: SetAgentStores(req_str(o, "email", max_chars=320), _stores(o)),
    "list_actions": lambda o: ListActions(req_str(o, "store", max_chars=MAX_ID_CHARS)),
    "approve_action": lambda o: ApproveAction(
        req_str(o, "store", max_chars=MAX_ID_CHARS), req_str(o, "action_id", max_chars=MAX_ID_CHARS)
    ),
    "reject_action": lambda o: RejectAction(
        req_str(o, "store", max_chars=MAX_ID_CHARS),
        req_str(o, "action_id", max_chars=MAX_ID_CHARS),
        (opt_str(o, "reason", max_chars=500) or "").strip(),
    ),
    "set_action_modes": lambda o: SetActionModes(
        req_str(o, "store", max_chars=MAX_ID_CHARS), _modes(o)
    ),
    "propose_action": lambda o: ProposeAction(
        _conversation_id(o), req_str(o, "kind", max_chars=40), _params(o)
    ),
    "confirm_action": lambda o: ConfirmAction(
        _conversation_id(o), req_str(o, "action_id", max_chars=MAX_ID_CHARS), req_bool(o, "accept")
    ),
}

CLIENT_TYPES = frozenset(_CLIENT)

_CLIENT_NAMES: dict[type, str] = {
    Auth: "auth", SubscribeInbox: "subscribe_inbox", Open: "open", Close: "close",
    TakeOver: "take_over", HandBack: "hand_back", Resolve: "resolve", Reopen: "reopen",
    Send: "send", Note: "note", Suggest: "suggest", Typing: "typing", MarkRead: "mark_read",
    ListAgents: "list_agents", AddAgent: "add_agent", RemoveAgent: "remove_agent",
    SetAgentStores: "set_agent_stores", ListActions: "list_actions",
    ApproveAction: "approve_action", RejectAction: "reject_action",
    SetActionModes: "set_action_modes", ProposeAction: "propose_action",
    ConfirmAction: "confirm_action",
}


def message_type(msg: ClientMessage) -> str:
    """The wire ``type`` of a console message (e.g. for an error's ``ref``)."""
    return _CLIENT_NAMES[type(msg)]


def decode(frame: str | bytes) -> ClientMessage:
    """Decode one console frame, or raise ``ProtocolError`` with a stable ``code``."""
    obj = decode_envelope(frame)
    parse = _CLIENT.get(obj["type"])
    if parse is None:
        raise ProtocolError(
            f"unknown message type {obj['type'][:40]!r}", code=ErrorCode.UNKNOWN_TYPE
        )
    return parse(obj)


def encode_client(msg: ClientMessage) -> str:
    """Encode a console message (tests and scripted clients)."""
    return encode_frame(_CLIENT_NAMES[type(msg)], dict(msg.__dict__))


# ---- server -> console ----------------------------------------------------------------------
# Console events carry no seq of their own: the conversation events inside ``conversation``
# and ``event`` keep the seq of the shopper socket, which is what ordering relies on.


@dataclass(frozen=True)
class Ready:
    """Authentication succeeded: who is logged in and which stores they work in."""

    agent: dict[str, Any]
    stores: list[dict[str, Any]]


@dataclass(frozen=True)
class Inbox:
    """A snapshot of one store's inbox for a filter and search text."""

    store: str
    filter: str
    q: str
    conversations: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class InboxUpdate:
    """One inbox row changed (or appeared); ``matches`` is false when it left the filter."""

    store: str
    conversation: dict[str, Any]
    matches: bool = True
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Conversation:
    """The opened conversation: state, transcript (notes included), customer panel."""

    conversation_id: str
    store: str
    state: str
    seq: int
    events: list[dict[str, Any]]
    customer: dict[str, Any]
    owner: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None


@dataclass(frozen=True)
class Event:
    """A live event of an open conversation, as the shopper socket has it (or a note)."""

    conversation_id: str
    event: dict[str, Any]
    # With ownership changes (stored ``status`` events): who owns it now ({id, name} or null).
    owner: dict[str, Any] | None = None


@dataclass(frozen=True)
class SuggestionToken:
    conversation_id: str
    suggestion_id: str
    text: str


@dataclass(frozen=True)
class SuggestionDone:
    """The copilot's full suggested reply and the sources it used."""

    conversation_id: str
    suggestion_id: str
    text: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    handoff: bool = False
    # Which shopper message (its ``ack`` seq) the suggestion answers.
    for_seq: int | None = None


@dataclass(frozen=True)
class Agents:
    """Admins: the team, after ``list_agents`` or a change (never carries passwords)."""

    agents: list[dict[str, Any]]


@dataclass(frozen=True)
class Actions:
    """One store's approval queue (``pending``: proposals awaiting approval, oldest
    first: {id, kind, status, summary, details, reason, conversation_id, order,
    expires_at}) and its action ``modes``; ``can_configure``: this agent may change them."""

    store: str
    pending: list[dict[str, Any]]
    modes: dict[str, str]
    can_configure: bool = False


@dataclass(frozen=True)
class ActionPreview:
    """An agent's own action for the customer: the preview to confirm (``action.status``
    ``proposed``), then what became of it (``executed``, ``declined``, ``failed``,
    ``awaiting_approval``; ``reason``)."""

    conversation_id: str
    action: dict[str, Any]


@dataclass(frozen=True)
class Error:
    code: str
    message: str
    # The client message this error is about: its ``id``, or its type for id-less actions.
    ref: str | None = None
    conversation_id: str | None = None


ServerEvent = (
    Ready | Inbox | InboxUpdate | Conversation | Event | SuggestionToken | SuggestionDone | Agents
    | Actions | ActionPreview | Error
)

_SERVER_NAMES: dict[type, str] = {
    Ready: "ready", Inbox: "inbox", InboxUpdate: "inbox_update", Conversation: "conversation",
    Event: "event", SuggestionToken: "suggestion_token", SuggestionDone: "suggestion_done",
    Agents: "agents", Actions: "actions", ActionPreview: "action_preview", Error: "error",
}
SERVER_TYPES = frozenset(_SERVER_NAMES.values())


def encode(event: ServerEvent) -> str:
    """Encode one server event as the text of one frame."""
    return encode_frame(_SERVER_NAMES[type(event)], dict(event.__dict__))


def conversation_event(
    kind: str, seq: int, payload: Mapping[str, Any], *, internal: bool = False
) -> dict[str, Any]:
    """A conversation's logged event as the console has it (inside ``conversation`` and
    ``event``): the shopper socket's wire form, with notes flagged ``internal``."""
    event = chat.wire(kind, seq, payload)
    if internal:
        event["internal"] = True
    return event


def decode_event(frame: str | bytes) -> ServerEvent:
    """Decode one server frame (the console side of :func:`encode`; used by tests)."""
    obj = decode_envelope(frame)
    kind = obj["type"]
    cls = next((c for c, n in _SERVER_NAMES.items() if n == kind), None)
    if cls is None:
        raise ProtocolError(f"unknown event type {kind[:40]!r}", code=ErrorCode.UNKNOWN_TYPE)
    try:
        return cls(**{k: v for k, v in obj.items() if k not in ("v", "type")})
    except TypeError as exc:
        raise ProtocolError(f"bad {kind} event: {exc}", code=ErrorCode.BAD_MESSAGE) from exc
