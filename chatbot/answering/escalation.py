"""Requests the bot cannot do, handed to a person with a note that names who and what.

Some requests are out of the bot's scope whatever is said next: something no action
kind does (the name or email on the account, a price match or adjustment, a discount on
an order, adding an item to a placed order), a kind the store turned off, a policy
refusal the shopper does not accept ("cancel it and refund me anyway": the alternative
offered does not fit), or a person asked for in the middle of an action. Code recognises
them (the model never decides), answers with a fixed reply and hands the conversation
to the team. The handoff carries a note, stored as the conversation's handoff reason,
that the console's handoff summary (:mod:`chatbot.agents.summary`) leads with: who the
customer is, which order, and what they wanted, so the agent does not ask again.
"""

from __future__ import annotations

import re

# The pipeline's reason for a fixed reply that hands a request to the team (the reply
# manager asks for the handoff, as for "asked_human").
CANNOT_DO = "cannot_do"

# A request (not a question about the policy): "can you ...", "I want ...", "please ...",
# or a sentence that starts with the verb.
_ASKS = re.compile(
    r"\b(can|could|would|will) you\b|\b(i want|i'd like|i would like|i need|please|pls|"
    r"i wish|i'd want|help me|let me|i demand|give me)\b|^\W*(change|update|correct|fix|"
    r"price[- ]?match|match|adjust|refund|add|delete|close|remove|apply|give)\b",
    re.IGNORECASE,
)
# ... about this shopper's own order or account (a policy question names neither).
_MINE = re.compile(
    r"#\s?[A-Za-z]{0,3}\d{3,}|\b(my|this|that|the|our) (order|purchase|account|profile|"
    r"item|items|jacket|boots|one)\b|\bmy (name|e-?mail|phone|password|username)\b",
    re.IGNORECASE,
)
# What no action kind does, with how the note says it.
_CANNOT = (
    (re.compile(r"\bprice[- ]?match\w*|\bmatch (the|a|their|that|this) price\b|"
                r"\bcheaper (elsewhere|at|on|somewhere)\b", re.I),
     "a price match"),
    (re.compile(r"\bprice (adjustment|difference|drop)\b|\brefund (me )?the difference\b|"
                r"\b(price|it) (went|has gone|dropped) down\b", re.I),
     "a price adjustment (refund of a price difference)"),
    (re.compile(r"\b(discount|coupon|promo(tion)? code|voucher|compensation|goodwill)\b", re.I),
     "a discount or compensation on an order"),
    (re.compile(r"\b(chang\w*|updat\w*|correct\w*|fix\w*|misspel\w*|wrong)\b.{0,40}"
                r"\bname\b(?!.{0,20}\b(item|product|jacket)\b)", re.I),
     "a change of a name on the account or an order"),
    (re.compile(r"\b(chang\w*|updat\w*|correct\w*|fix\w*)\b.{0,30}"
                r"\b(e-?mail( address)?|phone( number)?|password|username)\b", re.I),
     "a change of the account's email, phone or password"),
    (re.compile(r"\b(delete|close|remove|deactivate|cancel)\b.{0,20}\b(my )?account\b", re.I),
     "the closing of the account"),
    (re.compile(r"\badd\b.{0,50}\bto (my|the|this|that) order\b", re.I),
     "an addition to a placed order"),
)
# The shopper does not accept a refusal or what was offered instead.
_INSISTS = re.compile(
    r"\b(anyway|anyways|regardless|no matter what|even (so|though|if)|i don'?t care|"
    r"just (refund|cancel|do) it|not acceptable|unacceptable|make an exception)\b",
    re.IGNORECASE,
)
# Policy refusals a person may look at (an exception is theirs to make); a wrong detail
# (an unknown item, a bad reason) is the shopper's to fix in chat instead.
POLICY_CODES = frozenset({
    "action_off", "wrong_status", "outside_window", "refund_method_not_allowed",
    "payment_not_changeable", "would_empty_order", "insufficient_balance",
})

# Said after a kind the store turned off ("I can't do that in this chat for this store.").
PASSED_ON = (
    "I'm passing your request to a person on our team with a summary, so you won't have to "
    "repeat yourself; they'll reply here as soon as they're available."
)
# Said after a refusal the shopper does not accept, or that leaves nothing to offer.
PASSING_ON = (
    "I can't do more than that in this chat, so I'm passing your request to a person on our "
    "team with a summary, so you won't have to repeat yourself; they'll reply here as soon "
    "as they're available."
)


# What each action kind gives the shopper, as the note says it ("wants a return").
KIND_WANTS = {
    "cancel_order": "the cancellation of the order",
    "modify_order_address": "a change of the order's shipping address",
    "modify_order_payment": "a change of the order's payment method",
    "modify_order_items": "a change of items in the order",
    "change_items": "a change of items in the order",
    "return_items": "a return",
    "exchange_items": "an exchange",
    "modify_default_address": "a change of the default address",
    "remove_order_items": "the removal of items from the order",
}


def cannot_do(message: str) -> str | None:
    """What the message asks for on the shopper's own order or account that no action
    does ("a price match", "a change of a name on the account or an order"), or None."""
    if not (_ASKS.search(message) and _MINE.search(message)):
        return None
    for pattern, want in _CANNOT:
        if pattern.search(message):
            return want
    return None


def insists(message: str) -> bool:
    """Whether the shopper does not accept a refusal ("... and refund me anyway")."""
    return bool(_INSISTS.search(message))


def reply_for(want: str) -> str:
    """The fixed reply to a request the bot cannot do."""
    return (f"I can't arrange {want} in this chat, so I'm passing your request to a person "
            "on our team with a summary, so you won't have to repeat yourself; they'll reply "
            "here as soon as they're available.")


def note(who: str, order: str, want: str, *, said: str = "", bot: str = "") -> str:
    """The handoff note: who, which order, what they wanted (the summary's first line).

    ``said`` is the shopper's request in their words, ``bot`` what the bot answered (a
    refusal's reason) or where the action stood."""
    parts = [f"{who} wants {want}"]
    if order:
        parts[0] += f" (order {order})"
    if said:
        parts.append(f"asked: “{_short(said, 160)}”")
    if bot:
        parts.append(bot)
    return _short("; ".join(parts), 480)


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
