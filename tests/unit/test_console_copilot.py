"""The console copilot without a socket: the inbox's copilot input in, suggestion frames out."""

from __future__ import annotations

from typing import Any

import pytest

from chatbot.agents.inbox import CopilotInput
from chatbot.conversations.log import ConversationRef
from chatbot.errors import ChatbotError
from chatbot.protocol import agent as proto
from chatbot.server import console_copilot
from chatbot.types import Source, Turn
from tests.fakes import FakeAnswerer

CONV = ConversationRef(7, "c_" + "A" * 16, 1, 42, "agent", 1, 0)


class Inbox:
    """The one question the copilot asks: what the shopper last wanted to know."""

    def __init__(self, target: CopilotInput | None) -> None:
        self.target = target
        self.asked: list[int] = []

    async def copilot_input(self, conversation_id: int) -> CopilotInput | None:
        self.asked.append(conversation_id)
        return self.target


async def suggest(inbox: Inbox, answerer: FakeAnswerer | None) -> list[Any]:
    sent: list[Any] = []

    async def send(event: proto.ServerEvent) -> None:
        sent.append(event)

    await console_copilot.suggest(inbox, answerer, CONV, send)
    return sent


async def test_a_suggestion_streams_tokens_then_done_grounded_like_a_bot_reply() -> None:
    target = CopilotInput("Where is #W1?", 5, [Turn("shopper", "hi")], frozenset({"#W1"}),
                          {"order": "#W1"})
    fake = FakeAnswerer()
    fake.queue(["It ", "shipped."], sources=[Source("order", "#W1", "Order #W1")])
    sent = await suggest(Inbox(target), fake)
    assert [type(e).__name__ for e in sent] == ["SuggestionToken", "SuggestionToken",
                                                "SuggestionDone"]
    done = sent[-1]
    assert (done.text, done.for_seq, done.conversation_id) == ("It shipped.", 5, CONV.public_id)
    assert done.sources == [{"kind": "order", "id": "#W1", "title": "Order #W1", "url": ""}]
    assert len({e.suggestion_id for e in sent}) == 1
    (request,) = fake.requests
    assert request.for_agent and request.customer_id == 42 and request.state == {"order": "#W1"}
    assert request.verified_orders == frozenset({"#W1"}) and request.message == "Where is #W1?"
    assert request.conversation_key == f"copilot:{CONV.public_id}"
    assert fake.active == 0  # the engine slot is free once done


@pytest.mark.parametrize(("target", "answerer", "code"), [
    (None, FakeAnswerer(), "not_found"),
    (CopilotInput("hi", 1, [], frozenset()), None, "not_ready"),
])
async def test_nothing_to_answer_or_no_model_yet_is_an_error(
    target: CopilotInput | None, answerer: FakeAnswerer | None, code: str
) -> None:
    inbox = Inbox(target)
    with pytest.raises(ChatbotError) as err:
        await suggest(inbox, answerer)
    assert err.value.code == code
    assert inbox.asked == ([] if code == "not_ready" else [CONV.id])
