"""Small value types shared across modules (answers, sources, turns).

The server, the answering pipeline, the replay runner and the console all speak in
these types; the wire encoding of them lives only in :mod:`chatbot.protocol`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["shopper", "bot", "agent", "system"]


@dataclass(frozen=True)
class Source:
    """Something a reply used: an article, a product, an order or a shipment."""

    kind: str  # "faq" | "policy" | "product" | "order" | "shipment"
    id: str  # stable source id, e.g. "returns-window", "#W2611340"
    title: str
    url: str = ""


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str


@dataclass(frozen=True)
class AnswerRequest:
    """Everything the answering pipeline needs for one shopper message."""

    store_id: int
    message: str
    history: Sequence[Turn] = ()
    # The verified customer (database id), or None for a guest.
    customer_id: int | None = None
    # Order numbers a guest has proven (order number + email) in this conversation.
    verified_orders: frozenset[str] = frozenset()
    seed: int | None = None
    # Reuse KV cache across the turns of one conversation.
    conversation_key: str | None = None
    # The dialogue state the previous reply left (chatbot.answering.dialogue, as JSON);
    # None for a new conversation. Opaque to the server, which only stores it.
    state: dict[str, Any] | None = None
    # The shopper's answer to a proposed order action from a ``confirm`` frame:
    # (action id, accept); the message is then only what the transcript shows.
    confirm: tuple[str, bool] | None = None
    # A suggestion for an agent (the console's copilot), not a reply to the shopper:
    # never a handoff message; says plainly when no grounded answer exists.
    for_agent: bool = False
    # The shopper's address (the TCP peer), for per-address abuse limits (issue #18).
    client_ip: str = ""


@dataclass(frozen=True)
class ReplyToken:
    """A piece of reply text, safe to show (already passed the grounding guard)."""

    text: str


@dataclass(frozen=True)
class ReplyDone:
    text: str
    sources: list[Source] = field(default_factory=list)
    handoff: bool = False
    # Order numbers the guest just proved in this message (order number + email).
    verified_orders: frozenset[str] = frozenset()
    # How many unsupported claims the grounding guard removed from this reply.
    guard_fired: int = 0
    # The check each removal failed ("number", "status", "polarity", ...), one per firing.
    guard_reasons: tuple[str, ...] = ()
    # Why the pipeline answered the way it did ("grounded", "no_match", "asked_human", ...).
    reason: str = "grounded"
    # The dialogue state after this reply (JSON-able), for the next request's ``state``.
    state: dict[str, Any] | None = None
    # An order action this reply proposes ({"id", "kind", "status": "proposed", "summary",
    # "details"}) or reports ({"type": "action", "id", "kind", "status", "summary",
    # "reason"}); see docs/actions.md.
    action: dict[str, Any] | None = None
    # A reply that hands the conversation to the team ("asked_human", "cannot_do"): who
    # the customer is, which order, what they wanted; stored as the handoff reason.
    handoff_note: str = ""


ReplyEvent = ReplyToken | ReplyDone


class Answerer(Protocol):
    """Produces a streamed, grounded reply. The real one is ``chatbot.answering``."""

    def answer(self, request: AnswerRequest) -> AsyncIterator[ReplyEvent]:
        """Yield ``ReplyToken`` pieces, then exactly one ``ReplyDone``."""
        ...
