"""Acting on an order in conversation: ask for what is missing, propose, act on a yes.

The flow (issue #19) is code from start to end; the model never decides to act:

1. A verified shopper asks to cancel or return an order the facts are about ("please
   cancel it", "I want to return the boots").
2. Code collects what the action needs: the cancellation reason where the store's policy
   lists reasons, the items to return when the order has several. It asks for what is
   missing (``DialogueState.pending == "action_detail"``).
3. :meth:`ActionService.propose` checks the policy and stores a proposal; the reply is
   its summary (items, amounts, refund method) and a question. Nothing is written yet.
4. The next message answers it: a yes executes (the service checks the policy again,
   inside one transaction, and never acts twice); a no, or anything else, leaves the
   order as it was. A ``confirm`` frame over the socket does the same with the proposal's
   id.

Requests the flow does not handle in chat (changing items, the address or the payment
method; exchanges) get what the policy allows and an offer of a person.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from chatbot.actions.kinds import ActionRefused
from chatbot.actions.policy import CANCEL_ORDER, RETURN_ITEMS
from chatbot.actions.service import ActionIdError, ActionService, Outcome, Proposal

_ASKS_TO_ACT = re.compile(
    r"\b(i want|i'd like|i would like|i need|please|pls|can you|could you|would you|"
    r"go ahead|let'?s|help me|i wish|want to|like to)\b|^\W*(yes|yeah|ok(ay)?|sure)?\W*"
    r"(cancel|return|send back)\b",
    re.IGNORECASE,
)
_CANCEL = re.compile(r"\bcancel\w*", re.IGNORECASE)
_RETURN = re.compile(r"\b(return|send (it|them|this|these) back|refund)\w*", re.IGNORECASE)
_YES = re.compile(
    r"^\W*(yes|yeah|yep|yup|sure|ok(ay)?|go ahead|do it|please do|confirm(ed)?|correct|"
    r"that'?s (right|correct|fine)|sounds good|absolutely|of course|y)\b",
    re.IGNORECASE,
)
_NO = re.compile(
    r"^\W*(no|nope|nah|don'?t|do not|never ?mind|keep (it|my order|the order)|stop|wait|"
    r"hold on|not now|changed my mind|n)\b",
    re.IGNORECASE,
)
_REASONS = (
    (re.compile(r"\b(mistake|accident\w*|wrong(ly)?|by error|twice|duplicate)\b", re.I),
     "ordered by mistake"),
    (re.compile(r"\b(no longer|don'?t need|do not need|not needed|changed my mind|"
                r"don'?t want|found (it )?cheaper|too late)\b", re.I), "no longer needed"),
)

CONFIRM_QUESTION = "Shall I go ahead? Please answer yes or no."
DECLINED = "Okay, I haven't changed anything: your order stays as it is."
ASK_REASON = (
    "I can cancel order {order} for you. Could you tell me why: is it no longer needed, "
    "or was it ordered by mistake?"
)
ASK_ITEMS = "Which items from order {order} would you like to return: {items}, or all of them?"


@dataclass
class ActionPlan:
    """What the pipeline says about an action: a fixed text and the wire payload."""

    text: str
    reason: str
    action: dict[str, Any] | None = None
    # The state to leave: the proposal waiting for a yes, or the detail still missing.
    pending: str | None = None
    action_id: str = ""
    action_kind: str = ""
    handoff: bool = False
    sources_order: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def requested_kind(message: str, topics: Sequence[str]) -> str | None:
    """The action a message asks for ("please cancel it" -> cancel_order), if any.

    "Can I cancel it?" asks too: the proposal says what would happen and waits for a yes.
    """
    asks = bool(_ASKS_TO_ACT.search(message)) or re.search(r"\bcan i\b", message, re.I)
    if not asks:
        return None
    if "cancel" in topics and _CANCEL.search(message):
        return CANCEL_ORDER
    if "returns" in topics and _RETURN.search(message) and not re.search(
        r"\b(how|when|where|what|policy|window)\b", message, re.I
    ):
        return RETURN_ITEMS
    return None


def supplies_detail(kind: str, message: str) -> bool:
    """Whether ``message`` answers the question asked for ``kind`` (a cancellation reason,
    which items) rather than asking something else ("and #W6310710?")."""
    from chatbot.answering.router import extract_order_numbers

    if extract_order_numbers(message):
        return False
    if kind == CANCEL_ORDER:
        return cancel_reason(message) is not None
    if kind == RETURN_ITEMS:
        return len(message.split()) <= 12 and not message.rstrip().endswith("?")
    return False


def is_yes(message: str) -> bool:
    return bool(_YES.search(message)) and not _NO.search(message)


def is_no(message: str) -> bool:
    return bool(_NO.search(message))


def cancel_reason(message: str) -> str | None:
    for pattern, reason in _REASONS:
        if pattern.search(message):
            return reason
    return None


def return_items(order: Any, message: str) -> list[str] | None:
    """The variant ids (one per unit) to return: the items the message names, every
    item when it says "all" or the order has one kind of item; None when it must ask."""
    units = [(item.variant_source_id, item.name, item.quantity) for item in order.items]
    if not units or not all(variant for variant, _, _ in units):
        return None
    words = {w.rstrip("s") for w in re.findall(r"[a-z]{3,}", message.lower())}
    named = [
        u for u in units
        if {w.rstrip("s") for w in re.findall(r"[a-z]{3,}", u[1].lower())} & words
        - {"men", "women", "kid", "the", "and"}
    ]
    everything = re.search(r"\b(all|everything|whole order|entire order|both)\b", message, re.I)
    chosen = units if everything or len({u[0] for u in units}) == 1 else named
    if not chosen:
        return None
    return [variant for variant, _, quantity in chosen for _ in range(max(quantity, 1))]


def original_payment(order: Any) -> str:
    """The method of the order's first payment (where a refund goes back to)."""
    payments = [p for p in order.payments if p.kind == "payment"]
    return payments[0].method if payments else ""


class ActionFlow:
    """The pipeline's side of order actions (see the module docstring)."""

    def __init__(self, service: ActionService) -> None:
        self.service = service

    def propose(
        self,
        store_id: int,
        kind: str,
        order: Any,
        message: str,
        *,
        customer_id: int | None,
        verified_orders: Sequence[str],
        conversation_id: str,
        reason_required: bool,
    ) -> ActionPlan | None:
        """Ask for a missing detail, or store a proposal and ask for a yes; None when the
        store's data cannot name what to act on (order lines without item ids)."""
        if not order.items or not all(item.variant_source_id for item in order.items):
            return None
        params: dict[str, Any] = {"order": order.number}
        if kind == CANCEL_ORDER:
            reason = cancel_reason(message)
            if reason is None and reason_required:
                return ActionPlan(ASK_REASON.format(order=order.number), "action_detail",
                                  pending="action_detail", action_kind=kind,
                                  sources_order=order.number)
            params["reason"] = reason or "requested by the customer"
        elif kind == RETURN_ITEMS:
            items = return_items(order, message)
            if items is None:
                names = ", ".join(dict.fromkeys(i.name for i in order.items))
                return ActionPlan(ASK_ITEMS.format(order=order.number, items=names),
                                  "action_detail", pending="action_detail", action_kind=kind,
                                  sources_order=order.number)
            params["items"] = items
            params["payment_method"] = original_payment(order)
        try:
            proposal = self.service.propose(
                store_id, kind, params, customer_id=customer_id,
                verified_orders=list(verified_orders), conversation_id=conversation_id,
            )
        except ActionRefused as refused:
            return ActionPlan(_refusal(refused), "action_refused", sources_order=order.number,
                              handoff=refused.code == "action_off")
        return _proposed(proposal)

    def answer(
        self, store_id: int, action_id: str, accept: bool, *, conversation_id: str
    ) -> ActionPlan:
        """Execute or decline the proposal waiting for the shopper's answer."""
        try:
            if accept:
                outcome = self.service.execute(
                    action_id, store_id=store_id, conversation_id=conversation_id or None
                )
            else:
                outcome = self.service.decline(
                    action_id, store_id=store_id, conversation_id=conversation_id or None
                )
        except ActionIdError as error:
            if error.outcome is not None:
                return outcome_plan(error.outcome)
            return ActionPlan(
                "That request is no longer open, so nothing was changed. Tell me what "
                "you'd like to do and I'll check it again.", "action_unknown",
            )
        return outcome_plan(outcome)


def _proposed(proposal: Proposal) -> ActionPlan:
    text = f"{proposal.summary} {CONFIRM_QUESTION}"
    return ActionPlan(text, "action_proposed", action=proposal.to_wire(),
                      pending="confirm_action", action_id=proposal.id, action_kind=proposal.kind,
                      sources_order=proposal.order_number)


def outcome_plan(outcome: Outcome) -> ActionPlan:
    """The reply to an action's outcome, and the ``action`` event to store."""
    event = outcome.to_event()
    if outcome.status == "executed":
        text = f"Done. {_past(outcome)}"
    elif outcome.status == "declined":
        text = DECLINED
    elif outcome.status == "awaiting_approval":
        text = ("I've sent this to our team for approval and will let you know here: "
                f"{outcome.summary}")
    elif outcome.status == "expired":
        text = ("That request expired before I heard back, so nothing was changed. Ask me "
                "again if you still want it.")
    else:
        text = f"I couldn't do that: {outcome.reason or 'the order changed meanwhile.'}"
    return ActionPlan(text, f"action_{outcome.status}", action=event,
                      sources_order=str(outcome.details.get("order", "")))


def _past(outcome: Outcome) -> str:
    """The proposal's summary as something done ("Cancel order #W1 ..." -> "Order #W1 is
    cancelled ...")."""
    summary = outcome.summary
    match = re.match(r"Cancel order (\S+)(?: \(reason: [^)]*\))?\.\s*(.*)", summary)
    if match:
        return f"Order {match.group(1)} is cancelled. {match.group(2)}".strip()
    match = re.match(r"Return from order (\S+): (.*)", summary)
    if match:
        return f"The return from order {match.group(1)} is started: {match.group(2)}"
    return summary


def _refusal(refused: ActionRefused) -> str:
    text = refused.reason.rstrip(".") + "."
    if refused.alternatives:
        text += " What I can do: " + "; ".join(refused.alternatives) + "."
    return text


def money_total(amounts: Sequence[Decimal]) -> Decimal:
    return sum(amounts, Decimal("0"))
