"""The sans-I/O chat protocol: literal frames in, typed messages or coded errors out."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot.errors import ProtocolError
from chatbot.protocol import chat
from chatbot.protocol.common import ErrorCode, decode_envelope
from chatbot.types import Source


def test_hello_with_every_field() -> None:
    msg = chat.decode(
        '{"v":1,"type":"hello","store":"demo","conversation_id":"c_1","last_seq":7,'
        '"identity":"a.b","resume_token":"r_1","new_conversation":false,"extra":"ignored"}'
    )
    assert msg == chat.Hello("demo", "c_1", 7, "a.b", "r_1", False)


def test_missing_version_reads_as_v1_and_bytes_are_refused() -> None:
    assert chat.decode('{"type":"typing"}') == chat.Typing(active=True)
    with pytest.raises(ProtocolError) as info:
        chat.decode(b'{"type":"typing"}')
    assert info.value.code == ErrorCode.BINARY_FRAME


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"v":1,"type":"message","id":"","text":"x"}', "bad_message"),
        ('{"v":1,"type":"message","id":"' + "i" * 101 + '","text":"x"}', "bad_message"),
        ('{"v":true,"type":"typing"}', "bad_message"),
        ('{"v":1,"type":""}', "bad_message"),
        ('{"v":1,"type":7}', "bad_message"),
        ('{"v":1,"type":"typing","active":"yes"}', "bad_message"),
        ('{"v":1,"type":"feedback","reply_id":"r","rating":true}', "bad_message"),
        ('{"v":1,"type":"feedback","reply_id":"r","rating":1.0}', "bad_message"),
        ('{"v":1,"type":"hello","store":"demo","identity":5}', "bad_message"),
        ('{"v":1,"type":"end","rating":0}', "bad_message"),
        ('"just a string"', "bad_json"),
        ("", "bad_json"),
        ("{", "bad_json"),
        ("[" * 5000 + "]" * 5000, "bad_json"),
        ('{"v":1,"type":"HELLO","store":"demo"}', "unknown_type"),
    ],
)
def test_bad_frames_get_stable_codes(frame: str, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        chat.decode(frame)
    assert info.value.code == code
    assert info.value.message


def test_server_events_encode_compactly_with_version_and_seq() -> None:
    done = chat.Done(
        seq=9, reply_id="r_1", text="Hi <b>", sources=[Source("faq", "a", "A")], in_reply_to="m_1"
    )
    text = chat.encode(done)
    obj = json.loads(text)
    assert obj["v"] == 1 and obj["type"] == "done" and obj["seq"] == 9
    assert obj["sources"] == [{"kind": "faq", "id": "a", "title": "A", "url": ""}]
    assert " " not in text.replace("Hi <b>", "")  # compact separators
    assert chat.decode_event(text) == chat.Done(
        seq=9,
        reply_id="r_1",
        text="Hi <b>",
        sources=[chat.SourceRef("faq", "a", "A", "")],
        in_reply_to="m_1",
    )


def test_unicode_survives_round_trip() -> None:
    msg = chat.decode(json.dumps({"type": "message", "id": "m", "text": "Größe 🧦 \u2028 ok"}))
    assert isinstance(msg, chat.Message) and msg.text == "Größe 🧦 \u2028 ok"
    event = chat.Token(seq=1, reply_id="r", text="Größe 🧦")
    assert chat.decode_event(chat.encode(event)) == event


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "type",
                "store",
                "id",
                "text",
                "last_seq",
                "rating",
                "reply_id",
                "active",
                "identity",
                "conversation_id",
            ]
        ),
        json_values,
        max_size=6,
    )
)
def test_random_objects_decode_or_raise_protocol_error(obj: dict) -> None:
    try:
        msg = chat.decode(json.dumps(obj))
    except ProtocolError as exc:
        assert exc.code in vars(ErrorCode).values()
        return
    assert type(msg).__name__.lower() == obj["type"]


@settings(max_examples=400)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=50)))
def test_random_text_never_escapes_protocol_error(frame: str | bytes) -> None:
    try:
        decode_envelope(frame)
        chat.decode(frame)
    except ProtocolError:
        pass


@given(st.sampled_from(sorted(chat.CLIENT_TYPES)), st.text(max_size=30))
def test_known_types_with_junk_fields_never_crash(kind: str, junk: str) -> None:
    with contextlib.suppress(ProtocolError):
        chat.decode(json.dumps({"type": kind, "id": junk, "text": junk, "store": junk}))
