"""Fixed reply texts for the cases where code, not the model, should answer.

Verification requests, handoffs, "not your order", no match and refusals must read
the same every time and must never depend on what a small model happens to write.
They are streamed word by word like model replies, so the widget treats them alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatbot.answering.facts import Fact

VERIFY_REQUEST = (
    "I can help with that. To keep order details private, please send your order number "
    "(it is in your confirmation email) together with the email address you used at "
    "checkout."
)
VERIFY_NEED_EMAIL = (
    "Thanks. To confirm the order is yours, please also send the email address you used "
    "at checkout."
)
VERIFY_NEED_NUMBER = (
    "Thanks. Please also send the order number; it is in your order confirmation email."
)
VERIFY_FAILED = (
    "I couldn't verify an order with those details. Please check the order number and the "
    "email address used at checkout, or I can connect you with a person on our team."
)
NOT_YOUR_ORDER = (
    "I can't find that order on your account. Please check the order number; if it looks "
    "right, I can connect you with a person on our team."
)
NO_ORDERS = (
    "I can't find any orders on your account. If you ordered as a guest or with another "
    "email, send the order number and that email, or I can connect you with a person."
)
NO_MATCH = (
    "I'm sorry, I don't have information about that. I can connect you with a person on "
    "our team who can help."
)
HANDOFF = (
    "Of course. I'm connecting you with a person on our team; they'll reply here as soon "
    "as they're available."
)
REFUSED = (
    "Sorry, I can't help with that. I can only look up your own orders and answer "
    "questions about our products, shipping and policies."
)
OUT_OF_SCOPE = (
    "I'm the store's assistant, so I can only help with orders, products, shipping, returns "
    "and other store questions. What can I help you with?"
)
# For an agent (the copilot), instead of a handoff message the agent cannot use.
NO_GROUNDED_ANSWER = (
    "No grounded answer: the store's articles, catalogue and this customer's orders don't "
    "cover this question."
)
ASKED_FOR_PERSON = "The shopper asked for a person and has no open question for the bot."
GREETING = (
    "Hello! I can help with your orders, shipping, returns and our products. What can I do for you?"
)
THANKS = "You're welcome! Is there anything else I can help with?"
GOODBYE = "Thanks for stopping by. Have a great day!"


def small_talk(message: str) -> str:
    """A greeting, thanks or goodbye answered in kind."""
    lowered = message.lower()
    if any(w in lowered for w in ("thank", "thx", "cheers", "great", "perfect", "got it")):
        return THANKS
    if any(w in lowered for w in ("bye", "see you", "nice day", "good day")):
        return GOODBYE
    return GREETING


def choose_order(facts: Sequence[Fact]) -> str:
    """Ask which order is meant, listing the customer's candidates (built from their facts)."""
    lines = [f"- {fact.id}: {fact.text}" for fact in facts]
    return "You have several orders. Which one do you mean?\n" + "\n".join(lines)


def fact_summary(fact: Fact) -> str:
    """A plain restatement of one fact, used when the model produced nothing usable."""
    if fact.kind == "order":
        return f"Here is what I have for order {fact.id}: {fact.text}."
    return f"Here is what I found: {fact.text}"
