"""Shopper socket (``/ws/chat``) messages: typed dataclasses, ``decode`` and ``encode``.

Sans-I/O: :func:`decode` turns one frame (text or bytes) into a client message or raises
:class:`~chatbot.errors.ProtocolError` carrying an :class:`ErrorCode`; :func:`encode`
turns a server event into the text of one frame. :func:`decode_event` reads server frames
back (used by tests, the replay runner and the benchmarks). ``docs/protocol.md`` is the
human-readable form of this module; ``web_widget/protocol-examples.json`` holds one
example frame of every message, checked by Python and JavaScript tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chatbot.errors import ProtocolError
from chatbot.protocol.common import (
    MAX_ID_CHARS,
    MAX_TOKEN_CHARS,
    ErrorCode,
    decode_envelope,
    encode_frame,
    frame_fields,
    opt_bool,
    opt_int,
    opt_str,
    req_bool,
    req_int,
    req_str,
)

# ---- client -> server -------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """First frame of a connection: which store, and which conversation to resume."""

    store: str
    conversation_id: str | None = None
    last_seq: int | None = None
    identity: str | None = None
    # Proof that a guest owns ``conversation_id``; issued in ``welcome``.
    resume_token: str | None = None
    # Start a fresh conversation even though the client knows an older one.
    new_conversation: bool = False


@dataclass(frozen=True)
class Message:
    """A shopper message; ``id`` is chosen by the client and makes resending idempotent."""

    id: str
    text: str


@dataclass(frozen=True)
class Typing:
    active: bool = True


@dataclass(frozen=True)
class Handoff:
    """The shopper asks for a human."""

    reason: str = ""


@dataclass(frozen=True)
class Feedback:
    """Thumbs up (``1``) or down (``-1``) on one bot reply."""

    reply_id: str
    rating: int
    comment: str = ""


@dataclass(frozen=True)
class Stop:
    """Stop the reply being streamed (the partial reply is kept, marked interrupted)."""

    reply_id: str | None = None


@dataclass(frozen=True)
class End:
    """The shopper closes the conversation, optionally with a 1-5 satisfaction rating."""

    rating: int | None = None
    comment: str = ""


@dataclass(frozen=True)
class Confirm:
    """The shopper's answer to a proposed order action (a ``done`` with ``action``):
    ``accept`` true runs it ("Confirm"), false declines it ("Keep my order")."""

    action_id: str
    accept: bool


ClientMessage = Hello | Message | Typing | Handoff | Feedback | Stop | End | Confirm

MAX_COMMENT_CHARS = 2000
# Hard cap on message text in the protocol itself; the per-store limit
# (``Limits.max_message_chars``, error ``message_too_long``) is enforced by the session.
MAX_TEXT_CHARS = 1_000_000


def _hello(o: dict[str, Any]) -> Hello:
    return Hello(
        store=req_str(o, "store", max_chars=MAX_ID_CHARS),
        conversation_id=opt_str(o, "conversation_id", max_chars=MAX_ID_CHARS),
        last_seq=opt_int(o, "last_seq", lo=0),
        identity=opt_str(o, "identity", max_chars=MAX_TOKEN_CHARS),
        resume_token=opt_str(o, "resume_token", max_chars=MAX_TOKEN_CHARS),
        new_conversation=opt_bool(o, "new_conversation"),
    )


def _message(o: dict[str, Any]) -> Message:
    return Message(
        id=req_str(o, "id", max_chars=MAX_ID_CHARS),
        text=req_str(o, "text", max_chars=MAX_TEXT_CHARS, allow_empty=True),
    )


def _feedback(o: dict[str, Any]) -> Feedback:
    rating = req_int(o, "rating", lo=-1, hi=1)
    if rating == 0:
        raise ProtocolError("field 'rating' must be 1 or -1", code=ErrorCode.BAD_MESSAGE)
    return Feedback(
        reply_id=req_str(o, "reply_id", max_chars=MAX_ID_CHARS),
        rating=rating,
        comment=opt_str(o, "comment", max_chars=MAX_COMMENT_CHARS) or "",
    )


_CLIENT: dict[str, Callable[[dict[str, Any]], ClientMessage]] = {
    "hello": _hello,
    "message": _message,
    "typing": lambda o: Typing(active=opt_bool(o, "active", True)),
    "handoff": lambda o: Handoff(reason=opt_str(o, "reason", max_chars=MAX_COMMENT_CHARS) or ""),
    "feedback": _feedback,
    "stop": lambda o: Stop(reply_id=opt_str(o, "reply_id", max_chars=MAX_ID_CHARS)),
    "end": lambda o: End(
        rating=opt_int(o, "rating", lo=1, hi=5),
        comment=opt_str(o, "comment", max_chars=MAX_COMMENT_CHARS) or "",
    ),
    "confirm": lambda o: Confirm(
        action_id=req_str(o, "action_id", max_chars=MAX_ID_CHARS), accept=req_bool(o, "accept")
    ),
}

CLIENT_TYPES = frozenset(_CLIENT)


def decode(frame: str | bytes) -> ClientMessage:
    """Decode one client frame, or raise ``ProtocolError`` with a stable ``code``."""
    obj = decode_envelope(frame)
    parse = _CLIENT.get(obj["type"])
    if parse is None:
        raise ProtocolError(
            f"unknown message type {obj['type'][:40]!r}", code=ErrorCode.UNKNOWN_TYPE
        )
    return parse(obj)


def encode_client(msg: ClientMessage) -> str:
    """Encode a client message (for the replay runner, benchmarks and tests)."""
    kind = _CLIENT_NAMES[type(msg)]
    fields = {k: v for k, v in msg.__dict__.items() if v is not None}
    return encode_frame(kind, fields)


_CLIENT_NAMES: dict[type, str] = {
    Hello: "hello",
    Message: "message",
    Typing: "typing",
    Handoff: "handoff",
    Feedback: "feedback",
    Stop: "stop",
    End: "end",
    Confirm: "confirm",
}

# ---- server -> client -------------------------------------------------------------------
# Every event has ``seq``. Stored events (ack, token, done, stored status kinds,
# agent_message) get the next number of their conversation; ephemeral ones (thinking,
# typing, error) repeat the seq of the last stored event, so "the highest seq I have
# seen" is always a correct ``last_seq`` to resume from. The event log and the sockets
# stamp it: an event is built without one (``seq`` is keyword-only, 0 until stamped), the
# log stores its :func:`body`, and a socket sends it with its seq (:func:`encode_logged`).


@dataclass(frozen=True)
class SourceRef:
    kind: str
    id: str
    title: str
    url: str = ""


@dataclass(frozen=True)
class Ack:
    """The shopper message ``id`` is stored (also replayed as history)."""

    seq: int = field(default=0, kw_only=True)
    id: str
    text: str
    at: str = ""


@dataclass(frozen=True)
class Token:
    seq: int = field(default=0, kw_only=True)
    reply_id: str
    text: str


@dataclass(frozen=True)
class Done:
    """The reply is complete (or was cut short: ``interrupted``); ``text`` is all of it."""

    seq: int = field(default=0, kw_only=True)
    reply_id: str
    text: str
    sources: list[SourceRef] = field(default_factory=list)
    handoff: bool = False
    interrupted: bool = False
    in_reply_to: str | None = None
    at: str = ""
    # An order action this reply proposes: {"id", "kind", "status": "proposed", "summary",
    # "details"}; the client shows it as a confirmation card. Left out of the frame when
    # the reply proposes nothing.
    action: dict[str, Any] | None = None


# What became of a proposed action (the ``status`` of an ``action`` event).
ACTION_STATUSES = frozenset({"executed", "declined", "failed", "awaiting_approval", "expired"})


@dataclass(frozen=True)
class ActionEvent:
    """A stored ``action`` event: what became of proposal ``id`` (the shopper's yes or no,
    an agent's approval or rejection, an expiry). ``reason`` says why (a failure, a
    rejection); the bot's reply follows it."""

    seq: int = field(default=0, kw_only=True)
    id: str
    kind: str
    status: str
    summary: str = ""
    reason: str = ""


# Status kinds. Stored: agent_joined, agent_left, handoff_requested, resolved, reopened,
# verified. Ephemeral: thinking, typing, idle.
STATUS_KINDS = frozenset(
    {
        "thinking",
        "typing",
        "idle",
        "agent_joined",
        "agent_left",
        "handoff_requested",
        "resolved",
        "reopened",
        "verified",
    }
)


@dataclass(frozen=True)
class Status:
    seq: int = field(default=0, kw_only=True)
    kind: str
    text: str = ""
    agent: str | None = None
    # Conversation owner after this event: "bot" | "waiting" | "agent" | "resolved".
    state: str | None = None


@dataclass(frozen=True)
class AgentMessage:
    seq: int = field(default=0, kw_only=True)
    id: str
    text: str
    agent: str
    at: str = ""


@dataclass(frozen=True)
class Error:
    seq: int = field(default=0, kw_only=True)
    code: str
    message: str
    # The client message id this error is about, when there is one.
    ref: str | None = None


@dataclass(frozen=True)
class Welcome:
    """Answer to ``hello``: the conversation and the events the client has not seen."""

    seq: int = field(default=0, kw_only=True)
    conversation_id: str
    state: str
    resumed: bool
    events: list[ServerEvent] = field(default_factory=list)
    resume_token: str | None = None
    # {"verified": bool, "name": str}; never order data.
    customer: dict[str, Any] | None = None
    max_message_chars: int | None = None


@dataclass(frozen=True)
class Note:
    """An agent's internal note: stored in the conversation's log, shown in the console only.

    Never sent on the shopper socket, so it is not a :data:`ServerEvent`.
    """

    seq: int = field(default=0, kw_only=True)
    id: str
    text: str
    agent: str
    at: str = ""


ServerEvent = Ack | Token | Done | Status | AgentMessage | Error | Welcome | ActionEvent

_SERVER_NAMES: dict[type, str] = {
    Ack: "ack",
    Token: "token",
    Done: "done",
    Status: "status",
    AgentMessage: "agent_message",
    Error: "error",
    Welcome: "welcome",
    ActionEvent: "action",
}


# Every event the conversation log may hold: the shopper's events and the console's notes.
_LOG_NAMES: dict[type, str] = {**_SERVER_NAMES, Note: "note"}
LoggedEvent = Ack | Token | Done | Status | AgentMessage | Error | Note | ActionEvent


def _fields(event: ServerEvent | Note) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in event.__dict__.items():
        if key == "sources":
            value = [s.__dict__ for s in value]
        elif key == "events":
            value = [event_fields(e) for e in value]
        elif key == "action" and value is None:
            continue  # a done that proposes nothing: no ``action`` field
        out[key] = value
    return out


def event_fields(event: ServerEvent) -> dict[str, Any]:
    """The JSON-ready fields of an event (with ``v`` and ``type``)."""
    return frame_fields(_SERVER_NAMES[type(event)], _fields(event))


def encode(event: ServerEvent) -> str:
    """Encode one server event as the text of one frame."""
    return encode_frame(_SERVER_NAMES[type(event)], _fields(event))


def body(event: LoggedEvent) -> tuple[str, dict[str, Any]]:
    """An event's wire ``type`` and its fields without ``seq``: what the event log stores
    (and what the hub carries for an ephemeral event, whose receiver stamps the seq)."""
    fields = _fields(event)
    del fields["seq"]
    return _LOG_NAMES[type(event)], fields


def wire(kind: str, seq: int, payload: Mapping[str, Any]) -> dict[str, Any]:
    """A logged event (its ``type``, ``seq`` and stored fields) as a wire object."""
    return frame_fields(kind, {"seq": seq, **payload})


def encode_logged(kind: str, seq: int, payload: Mapping[str, Any]) -> str:
    """Encode a logged event (``type``, ``seq``, stored fields) as the text of one frame."""
    return encode_frame(kind, {"seq": seq, **payload})


def logged(kind: str, seq: int, payload: Mapping[str, Any]) -> ServerEvent:
    """A logged shopper event as its typed event (e.g. for ``welcome.events``)."""
    return event_from_fields({"type": kind, "seq": seq, **payload})


def proposed_action(action: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``done.action`` for a reply's action (``ReplyDone.action``): the proposal's wire
    dict, or None when the reply proposes nothing (no action, or an outcome)."""
    if not action or action.get("type") == "action" or action.get("status") != "proposed":
        return None
    return {
        "id": str(action["id"]),
        "kind": str(action.get("kind", "")),
        "status": "proposed",
        "summary": str(action.get("summary", "")),
        "details": dict(action.get("details") or {}),
    }


def action_event(action: Mapping[str, Any] | None) -> ActionEvent | None:
    """The ``action`` event of an outcome (``Outcome.to_event()``), or None when
    ``action`` is no outcome (nothing, or a proposal)."""
    if not action or action.get("status") not in ACTION_STATUSES:
        return None
    return ActionEvent(
        id=str(action["id"]),
        kind=str(action.get("kind", "")),
        status=str(action["status"]),
        summary=str(action.get("summary", "")),
        reason=str(action.get("reason") or ""),
    )


def event_from_fields(obj: dict[str, Any]) -> ServerEvent:
    """Build a server event from its decoded JSON object (inverse of :func:`event_fields`)."""
    kind = obj.get("type")
    cls = next((c for c, n in _SERVER_NAMES.items() if n == kind), None)
    if cls is None:
        raise ProtocolError(f"unknown event type {str(kind)[:40]!r}", code=ErrorCode.UNKNOWN_TYPE)
    data = {k: v for k, v in obj.items() if k not in ("v", "type")}
    try:
        if cls is Done:
            data["sources"] = [SourceRef(**s) for s in data.get("sources", [])]
        if cls is Welcome:
            data["events"] = [event_from_fields(e) for e in data.get("events", [])]
        return cls(**data)
    except TypeError as exc:
        raise ProtocolError(f"bad {kind} event: {exc}", code=ErrorCode.BAD_MESSAGE) from exc


def decode_event(frame: str | bytes) -> ServerEvent:
    """Decode one server frame (the client side of :func:`encode`)."""
    return event_from_fields(decode_envelope(frame))
