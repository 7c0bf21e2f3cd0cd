"""The console's copilot: a suggested reply, streamed from the bot's own answering pipeline.

It answers the shopper's latest question (see :func:`chatbot.agents.inbox.copilot_input`)
with the conversation's history, the verified customer and the orders a guest proved, so
the suggestion is grounded exactly as a bot reply would be. It is never stored nor sent to
the shopper: the agent inserts, edits and sends it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from chatbot.agents.inbox import CopilotInput
from chatbot.conversations.log import ConversationRef
from chatbot.conversations.models import new_public_id
from chatbot.errors import ChatbotError
from chatbot.protocol import agent as proto
from chatbot.protocol.common import ErrorCode
from chatbot.types import Answerer, AnswerRequest, ReplyDone, ReplyToken

Send = Callable[[proto.ServerEvent], Awaitable[None]]


class CopilotInputs(Protocol):
    """Where the copilot reads what to answer (:class:`~chatbot.agents.services.InboxService`)."""

    async def copilot_input(self, conversation_id: int) -> CopilotInput | None: ...


async def suggest(
    inbox: CopilotInputs, answerer: Answerer | None, conv: ConversationRef, send: Send
) -> None:
    """Stream ``suggestion_token`` frames then one ``suggestion_done`` through ``send``.

    Raises ``ChatbotError`` (``not_ready``, ``not_found``) when there is nothing to do.
    """
    if answerer is None:
        raise ChatbotError("the copilot is still loading", code=ErrorCode.NOT_READY)
    target = await inbox.copilot_input(conv.id)
    if target is None:
        raise ChatbotError("the shopper has not written yet", code=ErrorCode.NOT_FOUND)
    request = AnswerRequest(
        store_id=conv.store_id,
        message=target.text,
        history=target.history,
        customer_id=conv.customer_id,
        verified_orders=target.verified_orders,
        conversation_key=f"copilot:{conv.public_id}",
        state=target.dialogue,
        for_agent=True,
    )
    suggestion_id = new_public_id("s")
    stream = answerer.answer(request)
    try:
        async for event in stream:
            if isinstance(event, ReplyToken) and event.text:
                await send(proto.SuggestionToken(conv.public_id, suggestion_id, event.text))
            elif isinstance(event, ReplyDone):
                sources: list[dict[str, Any]] = [
                    {"kind": s.kind, "id": s.id, "title": s.title, "url": s.url}
                    for s in event.sources
                ]
                await send(proto.SuggestionDone(conv.public_id, suggestion_id, event.text,
                                                sources, event.handoff, target.seq))
                break
    finally:
        # Done, replaced by a new suggestion, or the console went: free the engine slot now.
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
