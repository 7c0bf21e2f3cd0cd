"""Dialogue state: what the bot knows about a conversation, owned by code between turns.

A 135M model given earlier replies in its prompt copies them ("Do you ship to Canada?"
answered with the jacket colours of the turn before), so the prompt carries only this
turn's facts and the shopper's words. What a follow-up needs ("it", "that order", "the
blue one", "and expedited?") is resolved here, from structured state the pipeline keeps:

- ``order``: the order in focus (the last one shown or asked about), ``orders``: the
  orders mentioned so far, most recent last;
- ``product`` / ``product_title``: the product in focus;
- ``article``: the article the last answer came from, ``question``: the shopper's last
  question that had a topic (for "and expedited?" style follow-ups);
- ``pending``: what the bot asked for and is waiting on (``verify_email``,
  ``verify_number``, ``choose_order``), with ``pending_orders`` (the order numbers the
  guest named) and ``pending_topics`` (what they wanted once verified, e.g. ``cancel``);
- ``action_kind`` / ``action_id`` / ``action_step`` / ``action_params``: an order action
  waiting for a detail (``pending == "action_detail"``: which one, and what was
  collected) or for a yes (``"confirm_action"``), see ``acting.py``;
- ``customer_id``: the customer identified in this conversation as the store's policy
  says (email, or name + zip; ``identify.py``), used as the signed-in customer from then
  on; ``pending_request``: what they asked before being identified (``"identify"``);
- ``last_reply``: the previous reply's text, so a new answer never repeats it unless the
  shopper asked the same thing (``last_message``).

The state is plain JSON (``to_json`` / ``from_json``) stored on the conversation row in
the same transaction as the reply, so any server process can continue the conversation.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Orders remembered for "the other order" style follow-ups.
MAX_REMEMBERED_ORDERS = 6
# Longest stored reply / message (a fingerprint for repeats, not a transcript).
MAX_STORED_CHARS = 600

# Shopper messages kept in ``recent``.
MAX_RECENT = 3

PENDING_VALUES = ("verify_email", "verify_number", "choose_order", "action_detail",
                  "confirm_action", "identify")
# Steps of an order action waiting for a detail (acting.py asks one question at a time).
ACTION_STEPS = ("reason", "items", "variant", "payment", "refund", "address", "")


@dataclass
class DialogueState:
    """One conversation's state between turns (see the module docstring)."""

    order: str | None = None
    orders: list[str] = field(default_factory=list)
    # What was asked about the order in focus (facts.ORDER_TOPICS), for "why not?".
    order_topics: list[str] = field(default_factory=list)
    product: str | None = None
    product_title: str = ""
    article: str | None = None
    # What the last answer was about: "order", "product" or "article" ("it" means that).
    last_kind: str = ""
    question: str = ""
    pending: str | None = None
    pending_orders: list[str] = field(default_factory=list)
    pending_topics: list[str] = field(default_factory=list)
    # The order action waiting for a detail ("action_detail") or a yes ("confirm_action").
    action_kind: str = ""
    action_id: str = ""
    # What the action waits for (ACTION_STEPS) and the details collected so far (JSON:
    # items, new_items, payment_method, address, reason), kept until it is proposed.
    action_step: str = ""
    action_params: dict[str, Any] = field(default_factory=dict)
    # The customer identified in this conversation (store policy: email, or name + zip),
    # a database id; 0 = nobody. Kept for the rest of the conversation.
    customer_id: int = 0
    # A request made before identification, answered once the customer is identified.
    pending_request: str = ""
    last_reply: str = ""
    last_message: str = ""
    # The last few shopper messages (a variant can be named across them).
    recent: list[str] = field(default_factory=list)
    turns: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> DialogueState:
        """The state stored by :meth:`to_json`; unknown keys and bad values are ignored
        (a state written by an older or newer version never breaks a conversation)."""
        state = cls()
        if not isinstance(data, dict):
            return state
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            default = getattr(state, f.name)
            if isinstance(default, dict):
                if isinstance(value, dict):
                    setattr(state, f.name, dict(value))
            elif isinstance(default, list):
                if isinstance(value, list):
                    setattr(state, f.name, [str(v) for v in value][-MAX_REMEMBERED_ORDERS:])
            elif isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, int) and not isinstance(value, bool):
                    setattr(state, f.name, value)
            elif isinstance(value, str) or value is None:
                setattr(state, f.name, value)
        if state.pending not in PENDING_VALUES:
            state.pending = None
        if state.action_step not in ACTION_STEPS:
            state.action_step = ""
        if state.customer_id < 0:
            state.customer_id = 0
        return state

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_reply"] = self.last_reply[:MAX_STORED_CHARS]
        data["last_message"] = self.last_message[:MAX_STORED_CHARS]
        data["question"] = self.question[:MAX_STORED_CHARS]
        data["recent"] = [m[:MAX_STORED_CHARS] for m in self.recent[-MAX_RECENT:]]
        data["pending_request"] = self.pending_request[:MAX_STORED_CHARS]
        return data

    def focus_order(self, number: str) -> None:
        """Make ``number`` the order in focus (and remember it)."""
        self.order = number
        if number in self.orders:
            self.orders.remove(number)
        self.orders.append(number)
        del self.orders[:-MAX_REMEMBERED_ORDERS]

    def other_order(self) -> str | None:
        """The most recent order mentioned before the one in focus ("the other order")."""
        for number in reversed(self.orders):
            if number != self.order:
                return number
        return None

    def clear_pending(self) -> None:
        self.pending = None
        self.pending_orders = []
        self.pending_topics = []
        self.action_kind = ""
        self.action_id = ""
        self.action_step = ""
        self.action_params = {}
        self.pending_request = ""


_NORMAL = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    """Lower-case words only: what "the same question" and "the same reply" compare."""
    return " ".join(_NORMAL.sub(" ", text.lower()).split())


def is_repeat(reply: str, state: DialogueState, message: str) -> bool:
    """Whether ``reply`` repeats the previous reply to a different question."""
    if not state.last_reply or not reply.strip():
        return False
    if normalise(message) == normalise(state.last_message):
        return False
    return normalise(reply) == normalise(state.last_reply)
