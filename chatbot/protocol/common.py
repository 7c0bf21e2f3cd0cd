"""The wire envelope shared by every socket: version, error codes, close codes, field checks.

Every frame is one JSON object in a text frame with at least ``v`` (protocol version) and
``type``. This module knows nothing about sockets: it turns text into a checked ``dict``
(or raises :class:`~chatbot.errors.ProtocolError` with a stable ``code``) and a ``dict``
back into text. :mod:`chatbot.protocol.chat` and :mod:`chatbot.protocol.agent` build their
typed messages on top of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from chatbot.errors import ProtocolError

PROTOCOL_VERSION: Final = 1
# Versions this server accepts from clients. A frame without ``v`` is read as version 1,
# so a hand-typed frame in a terminal client still works.
SUPPORTED_VERSIONS: Final = frozenset({1})


class ErrorCode:
    """Stable machine-readable codes carried by ``error`` events (``error.code``)."""

    BAD_JSON = "bad_json"  # not UTF-8 JSON, or not a JSON object
    BINARY_FRAME = "binary_frame"  # a binary frame; the protocol is text only
    BAD_MESSAGE = "bad_message"  # a missing field or a field of the wrong type
    UNKNOWN_TYPE = "unknown_type"  # ``type`` names no message of this socket
    UNSUPPORTED_VERSION = "unsupported_version"
    HELLO_REQUIRED = "hello_required"  # a message before ``hello``
    ALREADY_STARTED = "already_started"  # a second ``hello`` on one connection
    UNKNOWN_STORE = "unknown_store"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    INVALID_IDENTITY = "invalid_identity"  # forged, expired or malformed identity token
    CONVERSATION_NOT_FOUND = "conversation_not_found"  # unknown, or not yours to resume
    MESSAGE_TOO_LONG = "message_too_long"
    EMPTY_MESSAGE = "empty_message"
    RATE_LIMITED = "rate_limited"
    QUEUE_FULL = "queue_full"  # too many messages waiting for the reply in flight
    NOT_FOUND = "not_found"  # e.g. feedback for a reply that does not exist
    NOT_ALLOWED = "not_allowed"  # a state transition that is not allowed now
    CONFLICT = "conflict"  # lost a race (e.g. two agents took over at once)
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_READY = "not_ready"  # the answering pipeline is still loading
    ANSWER_FAILED = "answer_failed"  # the bot could not produce a reply
    SHUTTING_DOWN = "shutting_down"
    IDLE_TIMEOUT = "idle_timeout"
    INTERNAL_ERROR = "internal_error"
    # Console HTTP answers (issue #18): password checks at capacity (503), a GET where
    # only POST is allowed (405).
    BUSY = "busy"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # Order actions (issue #19): a ``confirm`` (or an agent's approve / reject) for an id
    # that is unknown (or another store's or conversation's), expired, or already answered.
    # Nothing changes. The same codes as ``chatbot.actions.service.ActionIdError.code``.
    UNKNOWN_ACTION = "unknown_action"
    ACTION_EXPIRED = "action_expired"
    ACTION_USED = "action_used"


class CloseCode:
    """WebSocket close codes the server uses (RFC 6455 section 7.4)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutdown, idle timeout
    POLICY_VIOLATION = 1008  # bad Origin, no ``hello`` in time, unknown store
    MESSAGE_TOO_BIG = 1009  # a frame over ``Limits.max_frame_bytes`` (sent by websockets)
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


# Field size caps that hold for every client frame, whatever the store's limits.
MAX_ID_CHARS: Final = 100
MAX_TOKEN_CHARS: Final = 4096
# The largest integer any client field may carry (JavaScript's Number.MAX_SAFE_INTEGER).
MAX_WIRE_INT: Final = 2**53 - 1


def decode_envelope(frame: str | bytes) -> dict[str, Any]:
    """Parse one frame into a JSON object with a checked ``v`` and a string ``type``.

    Raises ``ProtocolError`` with ``binary_frame``, ``bad_json``, ``unsupported_version``
    or ``bad_message``.
    """
    if isinstance(frame, bytes | bytearray | memoryview):
        raise ProtocolError(
            "binary frames are not supported; send JSON text", code=ErrorCode.BINARY_FRAME
        )
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays must not take the connection down.
        raise ProtocolError("the frame is not valid JSON", code=ErrorCode.BAD_JSON) from exc
    if not isinstance(obj, dict):
        raise ProtocolError("the frame must be a JSON object", code=ErrorCode.BAD_JSON)
    if _SURROGATE_ESCAPE.search(frame) and not _encodable(obj):
        # JSON may escape half a surrogate pair ("\ud800"); such a string is not Unicode
        # text, and the database and the socket (both UTF-8) would fail on it later.
        raise ProtocolError(
            "the frame contains an unpaired UTF-16 surrogate escape", code=ErrorCode.BAD_JSON
        )
    version = obj.get("v", 1)
    if type(version) is not int:
        raise ProtocolError("field 'v' must be an integer", code=ErrorCode.BAD_MESSAGE)
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            f"protocol version {version} is not supported (supported: 1)",
            code=ErrorCode.UNSUPPORTED_VERSION,
        )
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("field 'type' must be a non-empty string", code=ErrorCode.BAD_MESSAGE)
    return obj


_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(obj: Any) -> bool:
    """Every string in ``obj`` (keys included) can be encoded as UTF-8."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def frame_fields(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of one frame: ``{"v": PROTOCOL_VERSION, "type": kind, **fields}``."""
    payload: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": kind}
    payload.update(fields)
    return payload


def encode_frame(kind: str, fields: Mapping[str, Any]) -> str:
    """Encode one frame as compact JSON text: the one place a frame becomes text."""
    return json.dumps(frame_fields(kind, fields), ensure_ascii=False, separators=(",", ":"))


# ---- field readers: each raises ProtocolError(bad_message) naming the field ----------------


def _bad(name: str, expected: str) -> ProtocolError:
    return ProtocolError(f"field '{name}' must be {expected}", code=ErrorCode.BAD_MESSAGE)


def req_str(
    obj: Mapping[str, Any], name: str, *, max_chars: int | None = None, allow_empty: bool = False
) -> str:
    """A required string field."""
    value = obj.get(name)
    if not isinstance(value, str):
        raise _bad(name, "a string")
    if not allow_empty and not value:
        raise _bad(name, "a non-empty string")
    if max_chars is not None and len(value) > max_chars:
        raise _bad(name, f"at most {max_chars} characters")
    return value


def opt_str(obj: Mapping[str, Any], name: str, *, max_chars: int | None = None) -> str | None:
    """An optional string field (absent or null -> None)."""
    if obj.get(name) is None:
        return None
    return req_str(obj, name, max_chars=max_chars, allow_empty=True)


def req_int(
    obj: Mapping[str, Any], name: str, *, lo: int | None = None, hi: int | None = None
) -> int:
    """A required integer field (booleans are refused: JSON true is not 1).

    Every integer is range-checked, also without ``lo``/``hi``: at most
    ``MAX_WIRE_INT`` in size (2**53 - 1, exact in JavaScript and far inside SQL's
    BIGINT), so no client number can overflow a database column (issue #18).
    """
    value = obj.get(name)
    if type(value) is not int:
        raise _bad(name, "an integer")
    lo = -MAX_WIRE_INT if lo is None else lo
    hi = MAX_WIRE_INT if hi is None else min(hi, MAX_WIRE_INT)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad(name, f"an integer in [{lo}, {hi}]")
    return value


def opt_int(
    obj: Mapping[str, Any], name: str, *, lo: int | None = None, hi: int | None = None
) -> int | None:
    """An optional integer field."""
    if obj.get(name) is None:
        return None
    return req_int(obj, name, lo=lo, hi=hi)


def req_bool(obj: Mapping[str, Any], name: str) -> bool:
    """A required boolean field (``true`` or ``false``; 0 and 1 are refused)."""
    value = obj.get(name)
    if not isinstance(value, bool):
        raise _bad(name, "true or false")
    return value


def opt_bool(obj: Mapping[str, Any], name: str, default: bool = False) -> bool:
    """An optional boolean field."""
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(name, "true or false")
    return value
