"""Property fuzz of the sans-I/O decoders with mutated example frames (no sockets).

Complements tests/unit/test_protocol.py (random dicts and random text) with frames
derived from every shared example by mutation: 2,500 shopper and 1,500 console frames.
Properties: decoding returns a message of the frame's type or raises ``ProtocolError``
with a documented code and a message; a decoded message re-encodes to a frame that
decodes to the same message; the resulting ``error`` event is always sendable UTF-8.
The hypothesis deadline doubles as a hang check (nested or huge frames must stay fast).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.errors import ProtocolError
from chatbot.protocol import agent, chat
from chatbot.protocol.common import ErrorCode
from tests.fuzz.frames import CONSOLE_SEEDS, hostile_frame

CODES = frozenset(v for k, v in vars(ErrorCode).items() if not k.startswith("_"))
FUZZ = settings(
    max_examples=2500,
    deadline=1000,  # ms: far above the slowest honest decode; catches a hang
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _frame_type(frame: str | bytes) -> object:
    obj = json.loads(frame)
    return obj.get("type")


@FUZZ
@given(hostile_frame())
def test_shopper_decoder_survives_mutated_frames(frame: str | bytes) -> None:
    try:
        msg = chat.decode(frame)
    except ProtocolError as exc:
        assert exc.code in CODES and exc.message
        # What the server sends back must itself be a valid, UTF-8 encodable frame.
        text = chat.encode(chat.Error(seq=0, code=exc.code, message=exc.message))
        assert chat.decode_event(text.encode("utf-8").decode("utf-8")) is not None
        return
    assert chat._CLIENT_NAMES[type(msg)] == _frame_type(frame)
    assert chat.decode(chat.encode_client(msg)) == msg


@settings(FUZZ, max_examples=1500)
@given(hostile_frame(CONSOLE_SEEDS))
def test_console_decoder_survives_mutated_frames(frame: str | bytes) -> None:
    try:
        msg = agent.decode(frame)
    except ProtocolError as exc:
        assert exc.code in CODES and exc.message
        json.dumps({"message": exc.message}, ensure_ascii=False).encode("utf-8")
        return
    assert agent.message_type(msg) == _frame_type(frame)
    assert agent.decode(agent.encode_client(msg)) == msg


@settings(max_examples=40, deadline=2000)
@given(st.integers(1, 100_000), st.sampled_from(["[", '{"a":', '[{"b":']))
def test_deep_nesting_is_a_bad_json_error_not_a_crash(depth: int, opener: str) -> None:
    frame = opener * depth
    try:
        chat.decode(frame)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.BAD_JSON
    else:  # pragma: no cover - an unterminated frame can never decode
        raise AssertionError("decoded an unterminated frame")


@pytest.mark.parametrize(
    "frame",
    [
        '{"v":1,"type":"message","id":"m_1","text":"hi \\ud800 there"}',
        '{"v":1,"type":"hello","store":"de\\udfffmo"}',
        '{"v":1,"type":"message","id":"m_\\uDC00","text":"x"}',
        '{"v":1,"type":"typing","\\ud800":1}',
    ],
)
def test_unpaired_surrogate_escapes_are_bad_json(frame: str) -> None:
    """Regression (found by the live fuzz): such text crashed the hello handler (1011) and
    turned a message into ``internal_error``, because UTF-8 storage cannot encode it."""
    with pytest.raises(ProtocolError) as info:
        chat.decode(frame)
    assert info.value.code == ErrorCode.BAD_JSON
    with pytest.raises(ProtocolError):
        agent.decode(frame.replace('"message"', '"send"'))


def test_paired_surrogate_escapes_still_decode() -> None:
    msg = chat.decode('{"type":"message","id":"m","text":"\\ud83d\\ude00 \\u00e9"}')
    assert msg == chat.Message(id="m", text="😀 é")
