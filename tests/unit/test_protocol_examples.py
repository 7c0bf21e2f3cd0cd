"""The shared example frames (web_widget/protocol-examples.json) match the Python protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatbot.errors import ProtocolError
from chatbot.protocol import chat

EXAMPLES = json.loads(
    (Path(__file__).parents[2] / "web_widget" / "protocol-examples.json").read_text("utf-8")
)


@pytest.mark.parametrize("example", EXAMPLES["client"], ids=lambda e: e["name"])
def test_client_examples_decode_and_round_trip(example: dict) -> None:
    msg = chat.decode(json.dumps(example["frame"]))
    assert chat._CLIENT_NAMES[type(msg)] == example["frame"]["type"]
    assert chat.decode(chat.encode_client(msg)) == msg
    for key, value in example["frame"].items():
        if key not in ("v", "type"):
            assert getattr(msg, key) == value


@pytest.mark.parametrize("example", EXAMPLES["server"], ids=lambda e: e["name"])
def test_server_examples_round_trip_exactly(example: dict) -> None:
    event = chat.decode_event(json.dumps(example["frame"]))
    assert json.loads(chat.encode(event)) == example["frame"]


@pytest.mark.parametrize("example", EXAMPLES["invalid"], ids=lambda e: e["name"])
def test_invalid_examples_are_refused_with_their_code(example: dict) -> None:
    with pytest.raises(ProtocolError) as info:
        chat.decode(example["text"])
    assert info.value.code == example["code"]


def test_every_message_type_has_an_example() -> None:
    client = {e["frame"]["type"] for e in EXAMPLES["client"]}
    server = {e["frame"]["type"] for e in EXAMPLES["server"]}
    assert client == set(chat.CLIENT_TYPES)
    assert server == set(chat._SERVER_NAMES.values())
    status_kinds = {
        e["frame"]["kind"] for e in EXAMPLES["server"] if e["frame"]["type"] == "status"
    }
    assert status_kinds <= chat.STATUS_KINDS


def test_every_message_type_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text("utf-8")
    for name in set(chat.CLIENT_TYPES) | set(chat._SERVER_NAMES.values()):
        assert f"`{name}`" in doc, name
