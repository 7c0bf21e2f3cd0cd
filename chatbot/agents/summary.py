"""Handoff summaries for the inbox, built deterministically from the transcript.

No model is involved: an agent must be able to trust the summary, and a 135M model
paraphrasing a complaint is not trustworthy. The summary names why the bot handed off,
the topic (from the same rule router the bot uses, handed in as a :data:`Classify`), the
order numbers mentioned, and the shopper's last messages, so an agent can pick the
conversation up without scrolling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from chatbot.text import extract_order_numbers, shorten
from chatbot.types import Turn

MAX_QUOTES = 2
MAX_QUOTE_CHARS = 140
MAX_REASON_CHARS = 500


class Decision(Protocol):
    """What the classifier says about one shopper message (the router's ``Route``)."""

    @property
    def intent(self) -> str: ...

    @property
    def topics(self) -> tuple[str, ...]: ...


# ``classify(message, history)``: the answering router's ``route``. The server hands it in,
# so the console labels topics exactly as the bot routes them without agents importing
# answering (tests/unit/test_architecture.py).
Classify = Callable[[str, Sequence[Turn]], Decision]

# Intents whose message asks nothing of its own (the copilot skips them, topics keep the
# question before them).
NOT_A_QUESTION = frozenset({"handoff", "small_talk"})
_INTENT_LABELS = {
    "order": "Order",
    "product": "Product question",
    "policy": "Store policy / FAQ",
    "out_of_scope": "Off-topic",
    "injection": "Suspicious request",
    "small_talk": "Small talk",
    "handoff": "Asked for a human",
}
_ORDER_TOPIC_LABELS = {
    "status": "status",
    "tracking": "delivery / tracking",
    "returns": "return / refund",
    "items": "items",
    "total": "amount charged",
    "address": "shipping address",
}


@dataclass(frozen=True)
class HandoffSummary:
    """What an agent reads in the inbox before opening a handed-off conversation."""

    text: str
    topic: str
    orders: tuple[str, ...] = ()
    quotes: tuple[str, ...] = field(default_factory=tuple)
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "topic": self.topic,
            "orders": list(self.orders),
            "quotes": list(self.quotes),
            "reason": self.reason,
            "method": "rules",
        }


def detect_topic(turns: Sequence[Turn], classify: Classify) -> str:
    """The topic of the shopper's latest substantive message, as a short label."""
    history: list[Turn] = []
    topic = ""
    for turn in turns:
        if turn.role == "shopper":
            decision = classify(turn.text, history)
            if decision.intent == "order":
                parts = [_ORDER_TOPIC_LABELS.get(t, t) for t in decision.topics]
                topic = f"Order: {', '.join(parts)}"
            elif decision.intent not in NOT_A_QUESTION or not topic:
                topic = _INTENT_LABELS.get(decision.intent, "General")
        history.append(turn)
    return topic or "General"


def summarize(
    turns: Sequence[Turn], *, classify: Classify, reason: str = "", unanswered: int = 0
) -> HandoffSummary:
    """Summarise a conversation for the agent who will take it over.

    ``reason`` is why it was handed off (the shopper's words or the bot's), ``unanswered``
    how many bot replies could not be grounded in the store's data.
    """
    shopper = [t.text for t in turns if t.role == "shopper" and t.text.strip()]
    orders: list[str] = []
    for turn in turns:
        if turn.role in ("shopper", "bot"):
            for number in extract_order_numbers(turn.text):
                if number not in orders:
                    orders.append(number)
    topic = detect_topic(turns, classify)
    quotes = tuple(shorten(text, MAX_QUOTE_CHARS) for text in shopper[-MAX_QUOTES:])
    # The reason may be the bot's note of who wants what (chatbot/answering/escalation.py:
    # the customer, the order, the request and where it stood), so it is kept whole.
    why = shorten(reason, MAX_REASON_CHARS).rstrip(".") if reason.strip() else (
        "the shopper asked for a person")
    sentences = [f"Handed off: {why}.", f"Topic: {topic}."]
    if orders:
        sentences.append(f"Order{'s' if len(orders) > 1 else ''} mentioned: {', '.join(orders)}.")
    if unanswered:
        sentences.append(
            f"The bot could not answer {unanswered} question{'s' if unanswered > 1 else ''} "
            "from the store's data."
        )
    if quotes:
        sentences.append("Last: " + " / ".join(f"“{q}”" for q in quotes))
    return HandoffSummary(
        text=" ".join(sentences), topic=topic, orders=tuple(orders), quotes=quotes,
        reason=reason.strip(),
    )
