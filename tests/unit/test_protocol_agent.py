"""The console protocol (chatbot/protocol/agent.py) against the shared example frames and docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatbot.errors import ProtocolError
from chatbot.protocol import agent

ROOT = Path(__file__).parents[2]
EXAMPLES = json.loads((ROOT / "web_widget" / "protocol-examples.json").read_text("utf-8"))[
    "console"
]


@pytest.mark.parametrize("example", EXAMPLES["client"], ids=lambda e: e["name"])
def test_client_examples_decode_and_round_trip(example: dict) -> None:
    msg = agent.decode(json.dumps(example["frame"]))
    assert agent._CLIENT_NAMES[type(msg)] == example["frame"]["type"]
    assert agent.decode(agent.encode_client(msg)) == msg
    for key, value in example["frame"].items():
        if key not in ("v", "type"):
            assert getattr(msg, key) == value


@pytest.mark.parametrize("example", EXAMPLES["server"], ids=lambda e: e["name"])
def test_server_examples_round_trip_exactly(example: dict) -> None:
    event = agent.decode_event(json.dumps(example["frame"]))
    assert json.loads(agent.encode(event)) == example["frame"]


@pytest.mark.parametrize("example", EXAMPLES["invalid"], ids=lambda e: e["name"])
def test_invalid_examples_are_refused_with_their_code(example: dict) -> None:
    with pytest.raises(ProtocolError) as info:
        agent.decode(example["text"])
    assert info.value.code == example["code"]


def test_every_console_message_has_an_example_and_is_documented() -> None:
    assert {e["frame"]["type"] for e in EXAMPLES["client"]} == set(agent.CLIENT_TYPES)
    assert {e["frame"]["type"] for e in EXAMPLES["server"]} == set(agent.SERVER_TYPES)
    doc = (ROOT / "docs" / "protocol.md").read_text("utf-8")
    section = doc[doc.index("## Console socket"):]
    for name in agent.CLIENT_TYPES | agent.SERVER_TYPES:
        assert f"`{name}`" in section, name
    for field in ("conversation_id", "suggestion_id", "for_seq", "waiting_since", "unread"):
        assert f"`{field}`" in section, field


def test_defaults_and_limits() -> None:
    sub = agent.decode('{"type":"subscribe_inbox","store":"demo","q":"  refund  "}')
    assert sub == agent.SubscribeInbox(store="demo", filter="open", q="refund")
    with pytest.raises(ProtocolError) as info:
        agent.decode(json.dumps({"type": "note", "conversation_id": "c", "id": "n",
                                 "text": "x" * (agent.MAX_AGENT_TEXT_CHARS + 1)}))
    assert info.value.code == "bad_message"
    with pytest.raises(ProtocolError) as info:
        agent.decode(b'{"type":"auth","token":"t"}')
    assert info.value.code == "binary_frame"
