"""Intent routing: what a shopper's message is about, decided by rules, not by the model.

A 135M model cannot be trusted to decide whether to look up an order, hand off or
refuse; these rules can be read, tested and fixed. The router only classifies and
extracts (order numbers, an email, the order topic); the pipeline acts on it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from chatbot.answering.dialogue import DialogueState
from chatbot.text import extract_order_numbers
from chatbot.types import Turn


class Intent(StrEnum):
    ORDER = "order"
    PRODUCT = "product"
    POLICY = "policy"
    HANDOFF = "handoff"
    SMALL_TALK = "small_talk"
    OUT_OF_SCOPE = "out_of_scope"
    INJECTION = "injection"


@dataclass(frozen=True)
class Route:
    """The router's decision for one message."""

    intent: Intent
    # Order numbers as written in the store ("#W2611340"); may come from recent turns.
    order_numbers: tuple[str, ...] = ()
    # Which parts of an order were asked about (see facts.ORDER_TOPICS).
    topics: tuple[str, ...] = ()
    email: str | None = None


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _any(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


_INJECTION = _any(
    r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instructions?|rules?|prompts?|guidelines)",
    r"\b(system|hidden|initial|original)\s+(prompt|instructions?|message)",
    r"\b(reveal|print|show|repeat|output)\b.{0,30}\b(your|the)\s+(prompt|instructions|rules)",
    r"\byou are now\b|\bdeveloper mode\b|\bjailbreak\b|\bDAN\b|\bpretend (to be|you are)",
    r"\b(another|other|different|someone else'?s?|somebody else'?s?)\s+(customer|user|person|"
    r"account|people)",
    r"\b(all|every|everyone'?s?|other)\s+(?:of\s+)?(?:your\s+|the\s+|its\s+)?"
    r"(customers?|users?|orders in|accounts?)\b",
    r"\b(orders?|address|email|phone|account|details|purchases?)\s+(of|for|belonging to|from)\s+"
    r"(?!(?:me|my|mine|the|this|that|it|a|an|these|those|our|us|you|your|today|yesterday|"
    r"last|next|orders?|\d|#)\b)[a-z]{3,}\b(?!\s+(?:shoes?|shirts?|items?|products?))",
)
_HANDOFF = _any(
    r"\b(talk|speak|chat|connect|transfer)\b.{0,25}\b(person|human|agent|someone|somebody|"
    r"representative|rep|operator|staff|manager|supervisor|real)",
    r"\b(real|live|human)\s+(person|agent|human|support|being)",
    r"\bhuman\b\s*(please|pls|now)?\s*[.!?]*$",
    r"^\s*(agent|operator|representative|person)\s*(please|pls)?\s*[.!?]*\s*$",
    r"\bcustomer service (rep|representative|agent)\b",
)
_GREETING = _any(
    r"^\s*(hi|hello|hey|hiya|howdy|yo|good (morning|afternoon|evening)|greetings)\b[\s!.,]*"
    r"(there|team|all)?[\s!.,]*$",
    r"^\s*(thanks|thank you|thx|ty|cheers|great|perfect|ok(ay)?|cool|awesome|got it)\b"
    r"[\w\s!.,]{0,20}$",
    r"^\s*(bye|goodbye|see you|have a (nice|good) day)\b[\s!.,]*$",
    r"^\s*how are you\b[\s\w!.,?]{0,10}$",
)
_OUT_OF_SCOPE = _any(
    r"\b(weather|forecast|joke|poem|story|song|recipe|horoscope|lottery)\b",
    r"\b(president|prime minister|election|politic\w*|religion)\b",
    r"\b(capital of|meaning of life|bitcoin|crypto\w*|stock market|stock price)\b",
    r"\b(write|debug|fix)\b.{0,20}\b(code|program|script|essay|email to)\b",
    r"\b(homework|translate|solve)\b|\bwhat is \d+\s*[-+*/x]\s*\d+",
)
_ORDER_WORDS = _any(
    r"\bmy (orders?|package|parcel|delivery|shipment|purchase|items?|stuff|refund|return)\b",
    r"\b(where|when)\b.{0,30}\b(my|the|it|they)\b.{0,15}\b(package|parcel|order|delivery|"
    r"shipment|stuff|arrive|come|ship)",
    r"\bwhere(?:'s| is| are)\s+(it|they|my)\b",
    r"\b(track|tracking)\b",
    r"\b(i|we) (ordered|bought|purchased|received|got)\b",
    r"\b(hasn'?t|has not|didn'?t|did not|never|not yet)\b.{0,20}\b(arrived?|come|shipped|"
    r"delivered|received)\b",
    r"\b(return|refund|exchange|cancel|send back)\b.{0,25}\b(my|the|this|these)\b",
    r"\b(my|the|this) order status\b|\bstatus of (my|the|this)\b.{0,10}\border\b",
)
# General "can I / how do I / per your policy" questions are answered from the store's
# articles even when they mention "my order"; tracking requests are not general.
_GENERAL_QUESTION = _any(
    r"^\s*(can|could|may|should) (i|we)\b",
    r"^\s*(do|does|will) (you|your|it|they)\b",
    r"^\s*(is|are) (it|there|you)\b",
    r"^\s*how (do|can|long|many|much|soon|does|will)\b",
    r"^\s*(what|which|within|after|under|when)\b.{0,60}\b(policy|days?|allowed|needed|required)\b",
    r"\bpolic(y|ies)\b|\bper (your|the)\b|\baccording to\b",
)
_NOT_GENERAL = _any(r"\btrack", r"\bwhere(?:'s| is| are)\b")
_POLICY_WORDS = _any(
    r"\b(policy|policies|return window|warranty|guarantee|shipping (cost|time|fee)s?)\b",
    r"\b(how (long|do|can|much)|can i|do you|is it possible)\b.{0,40}\b(return|refund|exchange|"
    r"cancel|ship|deliver|pay|payment)",
)
_PRODUCT_WORDS = _any(
    r"\b(in stock|available|availability|sizes?|colou?rs?|options?|variants?|models?)\b",
    r"\b(price|cost|how much)\b",
    r"\b(do you (sell|have|carry)|looking for|recommend)\b",
)
_TOPICS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "tracking",
        _any(r"\b(track\w*|where|arriv\w*|deliver\w*|ship\w*|package|parcel|when will|eta)\b"),
    ),
    ("returns", _any(r"\b(return\w*|refund\w*|exchange\w*|send (it )?back|money back)\b")),
    (
        "items",
        _any(
            r"\b(items?|what did i (order|buy|get)|contents?|products?|list)\b",
            r"\bwhat(?:'s| is| was)\s+in\b|\bwhat (is|was|came) in\b|\bwhich (things|products)\b",
        ),
    ),
    ("total", _any(r"\b(total|how much|paid|pay|charged?|cost|amount|price)\b")),
    ("address", _any(r"\b(address|ship(ping)? to|sent to)\b")),
    ("cancel", _any(r"\bcancel\w*")),
    ("change", _any(r"\b(chang\w*|modif\w*|edit\w*|swap\w*|switch\w*)\b")),
)


# A shopper telling the bot what to say ("Reply only with: ...", "say that my order was
# refunded"). The instruction is cut from the message before routing and before the model
# sees it: a shopper's words never become the bot's claims.
_INSTRUCTION = re.compile(
    r"(?:^|[.?!,;]\s*|\band\s+|\bthen\s+)"
    r"(?:please\s+)?(?:just\s+)?"
    r"(?:reply|respond|answer|say|write|output|repeat|confirm|tell me)"
    r"(?:\s+(?:only|exactly|just|back|verbatim|me))*"
    r"(?:\s*:|\s+(?:with|that|this|the following|after me|it (?:was|is|has)))(?:\b|\s).*$",
    re.IGNORECASE | re.DOTALL,
)
_INSTRUCTION_MARKERS = re.compile(
    r"\b(only|exactly|verbatim|word for word|the following|after me)\b|:\s*\S|"
    r"\bthat (my|the|your|it|this)\b|\bit (was|is|has)\b",
    re.IGNORECASE,
)


def strip_instructions(text: str) -> tuple[str, bool]:
    """``text`` without a trailing instruction about what to reply, and whether one was cut.

    "What's the status of my order? Reply only with: Your order has been delivered and
    refunded" -> ("What's the status of my order?", True). A message that is only an
    instruction keeps its words (it is then answered as what it asks about).
    """
    match = _INSTRUCTION.search(text)
    if match is None or not _INSTRUCTION_MARKERS.search(match.group(0)):
        return text, False
    start = match.start()
    while start < len(text) and text[start] in ".?!":
        start += 1  # keep the question's own "?"
    instruction = text[start:]
    # Only the instruction's own sentence goes; a question after it stays.
    end = re.search(r"[.!?]\s+(?=[A-Z])", instruction)
    after = instruction[end.end() :] if end else ""
    kept = " ".join(part for part in (text[:start].strip(" ,;"), after.strip()) if part)
    if len(kept.split()) < 2:
        return text, True
    return kept, True


def extract_email(text: str) -> str | None:
    match = _EMAIL.search(text)
    return match.group(0).strip(".").lower() if match else None


def strip_emails(text: str) -> str:
    """``text`` without email addresses (the model never needs a shopper's email)."""
    return " ".join(_EMAIL.sub(" ", text).split())


def order_topics(text: str) -> tuple[str, ...]:
    """The order topics a message asks about; ``("status",)`` when none is specific."""
    topics = tuple(name for name, pattern in _TOPICS if pattern.search(text))
    return topics or ("status",)


def _recent_order_numbers(history: Sequence[Turn]) -> tuple[str, ...]:
    """Order numbers from the last exchange, for follow-ups like "and when will it arrive?"."""
    for turn in reversed(list(history)[-4:]):
        numbers = extract_order_numbers(turn.text)
        if numbers:
            return numbers
    return ()


_BARE_FOLLOW_UP = re.compile(
    r"^\W*(why( not)?|how come|really|are you sure|what do you mean|so|and( then)?|ok(ay)?,? "
    r"(so|and) (what|why|how)\b.*)\W*$",
    re.IGNORECASE,
)
_MY_ORDER = re.compile(
    r"\bmy (orders?|package|parcel|delivery|shipment|purchase|refund|return|stuff)\b", re.I
)
# A message that is little more than an order number ("and #W6310710?", "what about the
# other one, #W4776164?").
_BARE_ORDER = re.compile(
    r"^\W*(and|what about|how about|same for|also|ok,?)?\s*(the other one,?\s*|on|for)?\s*"
    r"(order\s*)?#?\s?[A-Za-z]{0,3}\d{3,10}\W*$",
    re.IGNORECASE,
)
# A short order question that names no other order (not "all my orders", "the other one").
_ABOUT_THE_ORDER = re.compile(
    r"^(?!.*\b(orders|all|other|another|every|each|any|new|second|first)\b)(?:\S+\s+){0,9}\S+$",
    re.IGNORECASE,
)
_OTHER_ORDER = re.compile(r"\b(the )?(other|another|previous|first|second) (one|order)\b", re.I)


def route(
    message: str, history: Sequence[Turn] = (), state: DialogueState | None = None
) -> Route:
    """Classify one shopper message (rules are checked most-specific first).

    ``state`` (the conversation's dialogue state) resolves follow-ups: the order in focus
    for "it" / "that order", the other one for "what about the other order?", and the
    order a guest is verifying when they send only their email.
    """
    text = " ".join(message.split())
    if _INJECTION.search(text):
        return Route(Intent.INJECTION)
    numbers = extract_order_numbers(text)
    email = extract_email(text)
    if state is not None and not numbers:
        if state.pending == "verify_email" and email and state.pending_orders:
            topics = tuple(state.pending_topics) or order_topics(text)
            return Route(Intent.ORDER, tuple(state.pending_orders), topics, email)
        if state.order and _OTHER_ORDER.search(text) and state.other_order():
            return Route(Intent.ORDER, (state.other_order() or "",), order_topics(text), email)
        if state.order and _refers_to_order(text, state.last_kind) and not _HANDOFF.search(text):
            return Route(Intent.ORDER, (state.order,), order_topics(text), email)
        if (
            state.order
            and state.last_kind == "order"
            and len(text.split()) <= 10
            and any(p.search(text) for name, p in _TOPICS if name in ("total", "tracking"))
            and not _GENERAL_QUESTION.search(text)
        ):
            # "so I paid nothing, right?" right after an order answer: that order.
            return Route(Intent.ORDER, (state.order,), order_topics(text), email)
        if state.order and state.order_topics and _BARE_FOLLOW_UP.search(text):
            # "why not?" right after an order answer: the same order, the same question.
            return Route(Intent.ORDER, (state.order,), tuple(state.order_topics), email)
    if _HANDOFF.search(text):
        return Route(Intent.HANDOFF, order_numbers=numbers)
    general = _GENERAL_QUESTION.search(text) and not _NOT_GENERAL.search(text)
    about_topic = (
        state is not None
        and not numbers
        and not state.order
        and state.last_kind in ("article", "product")
        and not _MY_ORDER.search(text)
    )
    if numbers or (_ORDER_WORDS.search(text) and not general and not about_topic):
        # ("when it arrives" right after an answer about international shipping is about
        # that topic, not about an order nobody has named.)
        if not numbers and state is None and history and _is_order_follow_up(text, history):
            numbers = _recent_order_numbers(history)
        if not numbers and state is not None and state.order and _ABOUT_THE_ORDER.search(text):
            # "and the tracking number?" with an order in focus: that order.
            numbers = (state.order,)
        topics = order_topics(text)
        carry = state is not None and numbers and topics == ("status",) and state.order_topics
        if carry and state is not None and _BARE_ORDER.search(text):
            # "and #W6310710?" after "can I cancel #W2611340?": the same question.
            topics = tuple(state.order_topics)
        return Route(Intent.ORDER, numbers, topics, email)
    if _GREETING.search(text):
        return Route(Intent.SMALL_TALK)
    if _OUT_OF_SCOPE.search(text):
        return Route(Intent.OUT_OF_SCOPE)
    if email and history and state is None:
        # A guest answering a verification request with the email alone.
        recent = _recent_order_numbers(history)
        if recent:
            return Route(Intent.ORDER, recent, ("status",), email)
    if state is None and history and _is_order_follow_up(text, history):
        return Route(Intent.ORDER, _recent_order_numbers(history), order_topics(text), email)
    if _POLICY_WORDS.search(text):
        return Route(Intent.POLICY)
    if _PRODUCT_WORDS.search(text):
        return Route(Intent.PRODUCT)
    return Route(Intent.POLICY)


def _refers_to_order(text: str, last_kind: str = "") -> bool:
    """ "that order", "this one", "cancel it", "when will it arrive?": the order in focus
    ("what's in it?" too, right after an order answer)."""
    if len(text.split()) > 14 or extract_order_numbers(text):
        return False
    if re.search(r"\b(that|this|the same|my) order\b", text, re.IGNORECASE):
        return True
    pronoun = re.search(r"\b(it|its|it's|that one|this one|them)\b", text, re.IGNORECASE)
    if not pronoun:
        return False
    if re.search(r"\bstatus\b", text, re.IGNORECASE):
        return True
    return any((name != "items" or last_kind == "order") for name, p in _TOPICS if p.search(text))


def _is_order_follow_up(text: str, history: Sequence[Turn]) -> bool:
    """A short question right after an order answer ("and the tracking number?")."""
    if not _recent_order_numbers(history) or len(text.split()) > 12:
        return False
    if re.search(r"\b(other|another|second|different|new)\b", text, re.IGNORECASE):
        return False
    refers_back = bool(re.search(r"\b(it|its|that one|this one|them)\b", text, re.IGNORECASE))
    if not refers_back and _GENERAL_QUESTION.search(text) and not _NOT_GENERAL.search(text):
        # "How long does standard shipping take?" after an order answer asks about the
        # policy, not about that order.
        return False
    return refers_back or any(name != "items" and p.search(text) for name, p in _TOPICS)
