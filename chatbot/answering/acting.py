"""Acting on an order in conversation: ask for what is missing, propose, act on a yes.

The flow (issue #19) is code from start to end; the model never decides to act:

1. An identified shopper (signed in, identified by the store's policy, or a guest who
   proved the order) asks for an action on an order the facts are about ("please cancel
   it", "I want to return the boots", "exchange the mouse", "change the address of
   #W123 to ...", "pay with PayPal instead").
2. Code collects what the action needs, one question at a time
   (``DialogueState.pending == "action_detail"``, ``action_step`` says which, the
   details collected so far are in ``action_params``): the cancellation reason where
   the store's policy lists reasons; the items (when the order has several); for each
   item to change, the new option ("size 10", "blue", "same but in black"), resolved
   against the product's available variants; the payment method for a price difference
   (the customer's saved methods); the refund method of a return (the original one or
   a gift card); the new address (parsed from the message, missing parts asked for).
3. :meth:`ActionService.propose` checks the policy and stores a proposal; the reply is
   its summary (items, amounts, refund method: the service's words, never ours) and a
   yes/no question. Nothing is written yet.
4. The next message answers it: a yes executes (the service checks the policy again,
   inside one transaction, and never acts twice); a no leaves the order as it was; a new
   request declines the open proposal and starts over; anything else leaves it open. A
   ``confirm`` frame over the socket does the same with the proposal's id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from chatbot.actions.kinds import ActionRefused, method_label
from chatbot.actions.policy import (
    CANCEL_ORDER,
    EXCHANGE_ITEMS,
    MODIFY_DEFAULT_ADDRESS,
    MODIFY_ORDER_ADDRESS,
    MODIFY_ORDER_ITEMS,
    MODIFY_ORDER_PAYMENT,
    REMOVE_ORDER_ITEMS,
    RETURN_ITEMS,
)
from chatbot.actions.service import ActionIdError, ActionService, Outcome, Proposal

# A pseudo-kind: "change the mouse to a white one" is an exchange once delivered and an
# item modification while pending; the order's status decides.
CHANGE_ITEMS = "change_items"

_ASKS_TO_ACT = re.compile(
    r"\b(i want|i'd like|i would like|i need|please|pls|can you|could you|would you|"
    r"go ahead|let'?s|help me|i wish|want to|like to|i'll|i will)\b|^\W*(yes|yeah|ok(ay)?|"
    r"sure|actually|also)?\W*(cancel|return|send back|exchange|change|swap|switch|update|"
    r"modify|remove)\b",
    re.IGNORECASE,
)
_QUESTION_ONLY = re.compile(r"\b(how|when|where|what|policy|window|why)\b", re.IGNORECASE)
_CANCEL = re.compile(r"\bcancel\w*", re.IGNORECASE)
_RETURN = re.compile(r"\b(return|send\b.{0,30}\bback|refund)\w*", re.IGNORECASE)
_EXCHANGE = re.compile(
    r"\b(exchang\w*|swap\w*|replace\w*)\b|\b(chang\w*|modif\w*|switch\w*)\b.{0,60}"
    r"\b(items?|size|colou?r|variant|option|version|model|to an? |for an? |into)\b|"
    r"\b(chang\w*|modif\w*|switch\w*)\s+(the|my|this|that|these|those)\s+"
    r"(?!(order|mind|address|payment|shipping|delivery|plan)\b)[a-z]",
    re.IGNORECASE,
)
_ADDRESS = re.compile(
    r"\b(chang\w*|updat\w*|modif\w*|correct\w*|new|fix\w*|wrong)\b.{0,50}\baddress\b|"
    r"\b(ship|send|deliver)\w*\b.{0,30}\b(it|them|order|package)?\b.{0,10}\bto\b.{0,5}\d+",
    re.IGNORECASE,
)
_DEFAULT_ADDRESS = re.compile(
    r"\b(default|profile|account|saved|my)\s+(shipping\s+)?address\b|\baddress on (my|the) "
    r"(account|profile)\b", re.IGNORECASE,
)
_PAYMENT = re.compile(
    r"\bpay(ing)?\b.{0,40}\b(with|by|using|through)\b|\bpayment method\b|"
    r"\b(chang\w*|switch\w*|updat\w*|modif\w*|use)\b.{0,50}"
    r"\b(payment|paypal|gift ?card|credit card|card|visa|mastercard|amex)\b",
    re.IGNORECASE,
)
_REMOVE = re.compile(r"\b(remove|take (out|off)|drop|delete)\b", re.IGNORECASE)
_YES = re.compile(
    r"^\W*(yes|yeah|yep|yup|sure|ok(ay)?|go ahead|do it|please do|confirm(ed)?|correct|"
    r"that'?s (right|correct|fine)|sounds good|absolutely|of course|y)\b",
    re.IGNORECASE,
)
_NO = re.compile(
    r"^\W*(no(?!\s+longer)|nope|nah|don'?t(?!\s+(need|want))|do not(?!\s+(need|want))|"
    r"never ?mind|keep (it|my order|the order)|stop|wait|hold on|not now|changed my mind|"
    r"n)\b|\b(changed my mind|never ?mind|forget it|"
    r"don'?t (do|change|cancel|return|exchange) (it|anything|that)|keep (it|everything) "
    r"(as it is|anyway))\b",
    re.IGNORECASE,
)
_REASONS = (
    (re.compile(r"\b(mistake|accident\w*|wrong(ly)?|by error|twice|duplicate)\b", re.I),
     "ordered by mistake"),
    (re.compile(r"\b(no longer|don'?t need|do not need|not needed|changed my mind|"
                r"don'?t want|found (it )?cheaper|too late)\b", re.I), "no longer needed"),
)
_ALL = re.compile(r"\b(all( of them| items| the items)?|everything|whole order|entire order|"
                  r"both)\b", re.IGNORECASE)

CONFIRM_QUESTION = "Shall I go ahead? Please answer yes or no."
DECLINED = "Okay, I haven't changed anything: your order stays as it is."
ASK_REASON = (
    "I can cancel order {order} for you. Could you tell me why: is it no longer needed, "
    "or was it ordered by mistake?"
)
ASK_ITEMS = "Which items from order {order} would you like to {verb}: {items}, or all of them?"
ASK_VARIANT = ("What would you like instead of the {item}? Available options: {options}. "
               "Please tell me the option values you want.")
ASK_PAYMENT = ("Which payment method should {use}: {methods}?")
ASK_REFUND = ("Should the refund go to the original payment method ({original}) or to a "
              "gift card ({gift})?")
ASK_ADDRESS = ("What is the new address? Please give the street, apartment or suite if any, "
               "city, state, zip code and country.")
ASK_ADDRESS_PART = "I still need the {missing} of the new address."
NOT_AVAILABLE = ("Sorry, {item} isn't available in {wanted}. Available options: {options}. "
                 "Which would you like?")
VERBS = {
    RETURN_ITEMS: "return", EXCHANGE_ITEMS: "exchange", MODIFY_ORDER_ITEMS: "change",
    REMOVE_ORDER_ITEMS: "remove",
}
ITEM_KINDS = (RETURN_ITEMS, EXCHANGE_ITEMS, MODIFY_ORDER_ITEMS, REMOVE_ORDER_ITEMS)
VARIANT_KINDS = (EXCHANGE_ITEMS, MODIFY_ORDER_ITEMS)


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
    # State to carry: "step" / "params" of a detail being collected, "customer_id" of a
    # customer just identified, "request" a request to answer after identification.
    extra: dict[str, Any] = field(default_factory=dict)


def requested_kind(message: str, topics: Sequence[str] = ()) -> str | None:
    """The action a message asks for ("please cancel it" -> cancel_order), if any.

    "Can I cancel it?" asks too: the proposal says what would happen and waits for a yes.
    ``CHANGE_ITEMS`` (exchange or modify items) is decided by the order's status later.
    """
    asks = bool(_ASKS_TO_ACT.search(message)) or re.search(r"\bcan i\b", message, re.I)
    if not asks:
        return None
    if _CANCEL.search(message):
        return CANCEL_ORDER
    if _PAYMENT.search(message) and not _RETURN.search(message):
        return MODIFY_ORDER_PAYMENT
    if _ADDRESS.search(message) or re.search(r"\baddress\b", message, re.I) and re.search(
            r"\b(chang|updat|modif|new|correct)", message, re.I):
        from chatbot.answering.router import extract_order_numbers

        if _DEFAULT_ADDRESS.search(message) and not (
                extract_order_numbers(message) or re.search(r"\border\b", message, re.I)):
            return MODIFY_DEFAULT_ADDRESS
        return MODIFY_ORDER_ADDRESS
    if _EXCHANGE.search(message):
        return CHANGE_ITEMS
    if _REMOVE.search(message) and re.search(r"\b(item|from (my|the|this) order)\b", message,
                                             re.I):
        return REMOVE_ORDER_ITEMS
    if _RETURN.search(message) and not (
        _QUESTION_ONLY.search(message) and not re.search(r"\b(i want|i'd like|please)\b",
                                                        message, re.I)
    ):
        return RETURN_ITEMS
    return None


def supplies_detail(kind: str, message: str, step: str = "") -> bool:
    """Whether ``message`` answers the question asked for ``kind`` (a cancellation reason,
    which items, which option, which payment method, the address) rather than asking
    something else ("and #W6310710?", "how long does a refund take?")."""
    from chatbot.answering.router import extract_order_numbers

    if extract_order_numbers(message):
        return False
    question = message.rstrip().endswith("?") and bool(
        re.match(r"\W*(how|when|where|why|what|which|can|could|do|does|did|is|are|was|were|"
                 r"will|would|has|have|should|may)\b", message, re.I))
    if kind == CANCEL_ORDER and step in ("reason", ""):
        return cancel_reason(message) is not None
    if question:
        return False
    if step == "items" or (kind == RETURN_ITEMS and not step):
        return len(message.split()) <= 120
    return True


def kind_for_order(kind: str, order: Any) -> str:
    """``CHANGE_ITEMS`` as the order's status allows it (delivered: exchange)."""
    if kind != CHANGE_ITEMS:
        return kind
    status = (order.status or "").lower()
    return EXCHANGE_ITEMS if status.startswith(("delivered", "completed")) else MODIFY_ORDER_ITEMS


def is_yes(message: str) -> bool:
    return bool(_YES.search(message)) and not _NO.search(message)


def is_no(message: str) -> bool:
    return bool(_NO.search(message))


def cancel_reason(message: str) -> str | None:
    for pattern, reason in _REASONS:
        if pattern.search(message):
            return reason
    return None


# --- items and variants -------------------------------------------------------------------

_STOP = {"men", "women", "kid", "kids", "the", "and", "with", "for", "one", "new", "item"}


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z0-9]{2,}", text.lower())} - _STOP


def _has_value(message: str, value: str) -> bool:
    value = str(value).strip()
    if not value:
        return False
    pattern = r"(?<![a-z0-9])" + re.escape(value.lower()) + r"(?![a-z0-9])"
    return re.search(pattern, message.lower()) is not None


def describe(name: str, options: dict[str, Any]) -> str:
    values = [str(v) for v in (options or {}).values() if str(v)]
    return f"{name} ({', '.join(values)})" if values else name


def _lines(order: Any) -> list[Any]:
    return [item for item in order.items if item.variant_source_id]


def pick_items(order: Any, message: str) -> list[str] | None:
    """The variant ids (one per unit) the message names, every item when it says "all" or
    the order has one kind of item; None when it must ask."""
    lines = _lines(order)
    if not lines or len(lines) != len(order.items):
        return None
    if _ALL.search(message) or len({i.variant_source_id for i in lines}) == 1:
        chosen = lines
    else:
        words = _words(message)
        named = [i for i in lines if _words(i.name) and _words(i.name) <= words]
        if not named:
            named = [i for i in lines if _words(i.name) & words]
        # Two lines of one product: the one whose options the message names.
        chosen = []
        for item in named:
            rivals = [o for o in named if o.name == item.name]
            if len(rivals) > 1:
                score = sum(_has_value(message, v) for v in (item.options or {}).values())
                best = max(sum(_has_value(message, v) for v in (o.options or {}).values())
                           for o in rivals)
                if score < best or best == 0:
                    continue
            chosen.append(item)
    if not chosen:
        return None
    return [i.variant_source_id for i in chosen
            for _ in range(min(_count_named(i, message) or i.quantity, max(i.quantity, 1)))]


_COUNTS = {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def _count_named(item: Any, message: str) -> int | None:
    """How many units of a line the message asks for ("one water bottle", "2 of the
    mugs"); None when it does not say (then every unit of the line)."""
    words = [w for w in re.findall(r"[a-z0-9]+", item.name.lower()) if w not in _STOP]
    if not words or item.quantity <= 1:
        return None
    found = re.search(r"\b(\d+|a|an|one|single|two|three|four|five)\s+(?:of\s+(?:the|my)\s+)?"
                      r"(?:[a-z0-9'-]+\s+){0,3}?" + re.escape(words[0]), message.lower())
    if found is None:
        return None
    raw = found.group(1)
    return int(raw) if raw.isdigit() else _COUNTS[raw]


def variant_choices(product: Any) -> dict[str, list[str]]:
    """Option name -> the values its available variants have (in a stable order)."""
    out: dict[str, list[str]] = {}
    for variant in product.variants:
        if not variant.available:
            continue
        for key, value in (variant.options or {}).items():
            values = out.setdefault(key, [])
            if str(value) not in values:
                values.append(str(value))
    return out


def options_text(product: Any) -> str:
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in variant_choices(product).items())


def _find(text: str, value: str) -> re.Match[str] | None:
    pattern = r"(?<![a-z0-9])" + re.escape(value.lower()) + r"(?![a-z0-9])"
    return re.search(pattern, text)


def _blank(text: str, match: re.Match[str]) -> str:
    return text[: match.start()] + " " * (match.end() - match.start()) + text[match.end():]


def named_options(product: Any, current: dict[str, Any], message: str) -> dict[str, str]:
    """The option values a message names for ``product``: "size 10" / "size: 10" first,
    then bare values ("blue"); of several values of one option ("from black to white"),
    the one that is not the current value. Longer values win ("Wi-Fi + Cellular" is not
    also "Wi-Fi", "19 bar" is not "9 bar")."""
    text = " ".join(message.lower().split())
    values: dict[str, list[str]] = {}
    for variant in product.variants:
        for key, value in (variant.options or {}).items():
            if str(value) and str(value) not in values.setdefault(key, []):
                values[key].append(str(value))
    named: dict[str, str] = {}
    for key, vals in values.items():
        for val in sorted(vals, key=len, reverse=True):
            found = re.search(r"(?<![a-z0-9])" + re.escape(key.lower()) + r"\s*(?::|is|of|=)?\s*"
                              + re.escape(val.lower()) + r"(?![a-z0-9])", text)
            if found:
                named[key] = val
                text = _blank(text, found)
                break
    for key, vals in values.items():
        if key in named:
            continue
        local, hits = text, []
        for val in sorted(vals, key=len, reverse=True):
            found = _find(local, val)
            if found:
                hits.append(val)
                local = _blank(local, found)
        if hits:
            fresh = [h for h in hits if h != str(current.get(key, ""))]
            named[key] = (fresh or hits)[0]
    return named


def pick_variant(product: Any, current: dict[str, Any], message: str
                 ) -> tuple[Any | None, str]:
    """The variant the message asks for instead of ``current`` (option words: "size 10",
    "blue", "same but in black"): every option it names, the others as they are.

    Returns (variant, "") or (None, why): "none" (no option named), "ambiguous",
    "unavailable" (the named options exist, but not together in stock).
    """
    named = named_options(product, current, message)
    if not named:
        return None, "none"
    scored = []
    for variant in product.variants:
        opts = {k: str(v) for k, v in (variant.options or {}).items()}
        if any(opts.get(k) != v for k, v in named.items()):
            continue
        keep = sum(opts.get(k) == str(v) for k, v in current.items() if k not in named)
        scored.append((keep, variant))
    available = [(keep, v) for keep, v in scored if v.available]
    if not available:
        return None, "unavailable"
    available.sort(key=lambda kv: kv[0], reverse=True)
    if len(available) > 1 and available[0][0] == available[1][0]:
        return None, "ambiguous"
    return available[0][1], ""


# --- payment methods ----------------------------------------------------------------------


def _kind_of(method: dict[str, Any]) -> str:
    return str(method.get("source") or method.get("type") or "").lower()


def pick_method(methods: Sequence[dict[str, Any]], message: str, original: str = ""
                ) -> str | None:
    """The saved method (its id) the message names: "PayPal", "the credit card ending in
    1234", "my gift card", its id, or "the original one"; None if none or several fit."""
    text = message.lower()
    for method in methods:
        if str(method.get("id", "")).lower() and str(method.get("id", "")).lower() in text:
            return str(method["id"])
    if original and re.search(r"\b(original|same (one|method|card|way)|as before)\b", text):
        return original
    by_last = [m for m in methods if m.get("last_four")
               and re.search(rf"\b{re.escape(str(m['last_four']))}\b", text)]
    if len(by_last) == 1:
        return str(by_last[0].get("id") or "")
    found = []
    for method in methods:
        kind = _kind_of(method)
        gift = re.search(r"\bgift ?cards?\b|\bstore credit\b|\bwebsite credit\b", text)
        if (kind == "paypal" and "paypal" in text) or (kind == "gift_card" and gift):
            found.append(method)
        elif kind in ("credit_card", "card", "debit_card") and re.search(
                r"\b(credit|debit) card\b|\b(visa|mastercard|amex)\b", text):
            brand = str(method.get("brand") or "").lower()
            brands = [b for b in ("visa", "mastercard", "amex") if b in text]
            if not brands or brand in brands:
                found.append(method)
    if len(found) == 1:
        return str(found[0].get("id") or "")
    return None


def methods_text(methods: Sequence[dict[str, Any]]) -> str:
    labels = [method_label(m).removeprefix("your ") for m in methods]
    if len(labels) <= 1:
        return "".join(labels)
    return ", ".join(labels[:-1]) + " or " + labels[-1]


# --- addresses ----------------------------------------------------------------------------

_STATE_ZIP = re.compile(r"\b([A-Z]{2})\s*,?\s+(\d{5}(?:-\d{4})?)\b")
_ZIP = re.compile(r"\b(?:zip(?: code)?(?: is)?:?\s*)?(\d{5}(?:-\d{4})?)\b", re.IGNORECASE)
_STREET = re.compile(r"\b\d+[A-Za-z]?\s+[A-Za-z][\w .'-]*", re.IGNORECASE)
_UNIT = re.compile(r"^\s*(apt|apartment|suite|ste|unit|#|floor|fl|room|building|bldg)\b",
                   re.IGNORECASE)
_COUNTRIES = {"usa": "USA", "us": "USA", "united states": "USA", "u.s.": "USA",
              "u.s.a.": "USA", "canada": "Canada", "uk": "UK", "united kingdom": "UK"}
ADDRESS_PARTS = ("address1", "city", "state", "zip", "country")


def parse_address(message: str, known: dict[str, str] | None = None) -> dict[str, str]:
    """Address fields from a message ("320 Cedar Avenue, Suite 116, San Antonio, TX 78219,
    USA"); ``known`` (parts given earlier) fills in what this message lacks."""
    out = {k: v for k, v in (known or {}).items() if v}
    text = " ".join(message.split())
    # Drop a lead-in ("please change the address of #W1 to ...").
    lead = re.search(r"\b(?:to|is|address:?)\s+(?=\d)", text, re.IGNORECASE)
    if lead:
        text = text[lead.end():]
    text = re.sub(r"#?\b[A-Z]{1,3}\d{5,}\b", " ", text)
    parts = [p.strip(" .") for p in text.split(",") if p.strip(" .")]
    state_at = None
    for i, part in enumerate(parts):
        found = _STATE_ZIP.search(part)
        if found:
            out["state"], out["zip"] = found.group(1), found.group(2)
            state_at = i
            head = part[: found.start()].strip(" ,")
            if head:  # "San Antonio TX 78219" in one part
                parts[i] = head
                state_at = i + 1
                parts.insert(i + 1, found.group(0))
            break
    for part in parts[(state_at + 1) if state_at is not None else len(parts):]:
        country = _COUNTRIES.get(part.lower().strip(" ."))
        if country or (part.isalpha() and len(part) > 3):
            out["country"] = country or part
    before = parts[:state_at] if state_at is not None else parts
    if before and _STREET.match(before[0]):
        out["address1"] = before[0]
        rest = before[1:]
        if rest and _UNIT.match(rest[0]):
            out["address2"] = rest[0]
            rest = rest[1:]
        if rest:
            out["city"] = rest[-1]
        out.setdefault("address2", "")
    elif state_at is not None and before:
        out["city"] = before[-1]
    if "zip" not in out:
        zipped = _ZIP.search(text)
        if zipped:
            out["zip"] = zipped.group(1)
    for key, country in _COUNTRIES.items():
        if "country" not in out and re.search(rf"(?<![\w.]){re.escape(key)}(?![\w.])", text,
                                              re.IGNORECASE):
            out["country"] = country
    return out


def missing_address(address: dict[str, str]) -> list[str]:
    return [part for part in ADDRESS_PARTS if not address.get(part)]


_PART_NAMES = {"address1": "street and number", "city": "city", "state": "state",
               "zip": "zip code", "country": "country"}


# --- the flow -----------------------------------------------------------------------------


def original_payment(order: Any) -> str:
    """The method of the order's first payment (where a refund goes back to)."""
    payments = [p for p in order.payments if p.kind == "payment"]
    return payments[0].method if payments else ""


def return_items(order: Any, message: str) -> list[str] | None:
    """Kept for callers of the first version: :func:`pick_items`."""
    return pick_items(order, message)


def precheck(kind: str, order: Any, config: Any, today: Any = None) -> ActionRefused | None:
    """What the policy refuses before any detail is asked (the store turned the kind off,
    the order's status does not allow it, the return window is over), so the bot never
    asks "which items?" for an order it cannot act on. The full check runs at proposal."""
    from types import SimpleNamespace

    from chatbot.actions import kinds as action_kinds
    from chatbot.actions.policy import OFF
    from chatbot.storage.clock import utcnow

    if config is None:
        return None
    if config.mode(kind) == OFF:
        return ActionRefused("I can't do that in this chat for this store.",
                             alternatives=["a member of our team can help: ask for a human "
                                           "agent"], code="action_off")
    if order is None:
        return None
    policy = config.policy
    statuses = {
        CANCEL_ORDER: (policy.cancel_statuses, "cancel"),
        MODIFY_ORDER_ADDRESS: (policy.modify_statuses, "change"),
        MODIFY_ORDER_PAYMENT: (policy.modify_statuses, "change"),
        MODIFY_ORDER_ITEMS: (policy.modify_statuses, "change"),
        REMOVE_ORDER_ITEMS: (policy.modify_statuses, "change"),
        RETURN_ITEMS: (policy.return_statuses, "return"),
        EXCHANGE_ITEMS: (policy.exchange_statuses, "exchange"),
    }
    if kind not in statuses:
        return None
    allowed, verb = statuses[kind]
    try:
        action_kinds._require_status(order, allowed, verb, policy)
        if kind in (RETURN_ITEMS, EXCHANGE_ITEMS):
            ctx = SimpleNamespace(policy=policy, today=today, now=utcnow())
            action_kinds._check_window(ctx, order, verb)  # type: ignore[arg-type]
    except ActionRefused as refused:
        return refused
    return None


@dataclass
class Who:
    """Who acts: the store, the customer (or the guest's proven orders), the conversation."""

    store_id: int
    customer_id: int | None
    verified_orders: Sequence[str]
    conversation_id: str


class ActionFlow:
    """The pipeline's side of order actions (see the module docstring)."""

    def __init__(self, service: ActionService) -> None:
        self.service = service

    # The first version's entry point (the first message of a request).
    def propose(self, store_id: int, kind: str, order: Any, message: str, *,
                customer_id: int | None, verified_orders: Sequence[str],
                conversation_id: str, reason_required: bool) -> ActionPlan | None:
        who = Who(store_id, customer_id, verified_orders, conversation_id)
        return self.advance(who, kind, order, None, message, {}, "",
                            reason_required=reason_required, first=True)

    def advance(
        self,
        who: Who,
        kind: str,
        order: Any,
        customer: Any,
        message: str,
        params: dict[str, Any],
        step: str,
        *,
        reason_required: bool,
        products: Any = None,
        first: bool = False,
        config: Any = None,
        today: Any = None,
    ) -> ActionPlan | None:
        """Take what ``message`` says for the detail asked (``step``), then ask for the
        next missing one or propose. ``order`` is None for ``modify_default_address``;
        ``products(product_source_id)`` loads a product with its variants. None when the
        store's data cannot name what to act on (order lines without item ids)."""
        if order is not None:
            kind = kind_for_order(kind, order)
            if kind in ITEM_KINDS and (not order.items or not _lines(order)
                                        or len(_lines(order)) != len(order.items)):
                return None
        params = dict(params)
        number = order.number if order is not None else ""
        methods = list(getattr(customer, "payment_methods", None) or [])
        early = precheck(kind, order, config, today)
        if early is not None:
            return _refused(early, kind, number)

        def ask(text: str, next_step: str, **more: Any) -> ActionPlan:
            return ActionPlan(text, "action_detail", pending="action_detail", action_kind=kind,
                              sources_order=number,
                              extra={"step": next_step, "params": params, **more})

        if kind == CANCEL_ORDER:
            reason = cancel_reason(message)
            if reason:
                params["reason"] = reason
            if "reason" not in params:
                if reason_required:
                    return ask(ASK_REASON.format(order=number), "reason")
                params["reason"] = "requested by the customer"
        elif kind in (MODIFY_ORDER_ADDRESS, MODIFY_DEFAULT_ADDRESS):
            address = parse_address(message, params.get("address"))
            params["address"] = address
            missing = missing_address(address)
            if len(missing) == len(ADDRESS_PARTS) or (first and "address1" in missing):
                return ask(ASK_ADDRESS, "address")
            if missing:
                parts = [_PART_NAMES[m] for m in missing]
                return ask(ASK_ADDRESS_PART.format(missing=" and ".join(parts)), "address")
            params["address"] = {k: address.get(k, "") for k in
                                 ("address1", "address2", "city", "state", "country", "zip")}
        elif kind == MODIFY_ORDER_PAYMENT:
            others = [m for m in methods if str(m.get("id")) != original_payment(order)]
            chosen = pick_method(others, message)
            if chosen:
                params["payment_method"] = chosen
            if "payment_method" not in params:
                if not others:
                    return ask("There is no other payment method saved on your account. "
                               "Please add one, then ask me again.", "payment")
                return ask(ASK_PAYMENT.format(use=f"pay for order {number} instead",
                                              methods=methods_text(others)), "payment")
        if kind in ITEM_KINDS and "items" not in params:
            picked = pick_items(order, message)
            if picked is None:
                names = "; ".join(dict.fromkeys(
                    (f"{i.quantity} x " if i.quantity > 1 else "") + describe(i.name, i.options)
                    for i in order.items))
                return ask(ASK_ITEMS.format(order=number, verb=VERBS[kind], items=names),
                           "items")
            params["items"] = picked
            # This message named the old items ("the Espresso Machine (19 bar, 1L)"). A
            # request about one item may name its new option too ("change the gloves to
            # size L": one the item does not have yet); an answer listing several items
            # names only those (the options of one are not the new options of another).
            naming = kind in VARIANT_KINDS
            if naming and not (first and len(set(picked)) == 1):
                message = ""
        else:
            naming = False
        if kind in VARIANT_KINDS:
            new_items = list(params.get("new_items") or [])
            lines = {i.variant_source_id: i for i in order.items}
            while len(new_items) < len(params["items"]):
                item = lines[params["items"][len(new_items)]]
                product = products(item.product_source_id) if products else None
                if product is None:
                    return None
                variant, why = pick_variant(product, dict(item.options or {}), message)
                label = describe(item.name, item.options)
                if naming and (variant is None or variant.source_id == item.variant_source_id):
                    variant, why = None, "none"
                if variant is None:
                    params["new_items"] = new_items
                    if why == "unavailable":
                        return ask(NOT_AVAILABLE.format(item=item.name, wanted="that option",
                                                        options=options_text(product)),
                                   "variant")
                    return ask(ASK_VARIANT.format(item=label, options=options_text(product)),
                               "variant")
                new_items.append(variant.source_id)
                if not naming:
                    message = ""  # one answer per item
            params["new_items"] = new_items
            if naming:
                message = ""
        # A payment method is read from the message that answers that question (or the
        # request itself), never from an item's name ("Digital Camera (SD card)").
        paying = message if (first or step in ("payment", "refund")) else ""
        if kind in VARIANT_KINDS and "payment_method" not in params:
            chosen = pick_method(methods, paying, original_payment(order))
            if chosen is None and len(methods) == 1:
                chosen = str(methods[0].get("id") or "")
            if chosen is None and not methods:
                chosen = original_payment(order)  # a guest: the order's own method
            if chosen is None:
                return ask(ASK_PAYMENT.format(
                    use="pay for or receive any price difference",
                    methods=methods_text(methods)), "payment")
            params["payment_method"] = chosen
        if kind == RETURN_ITEMS and "payment_method" not in params:
            original = original_payment(order)
            gift = [m for m in methods if _kind_of(m) == "gift_card"
                    and str(m.get("id")) != original]
            chosen = pick_method(methods, paying, original)
            if chosen is None and not gift:
                chosen = original
            if chosen is None:
                first_original = next((m for m in methods if str(m.get("id")) == original),
                                      None)
                return ask(ASK_REFUND.format(
                    original=method_label(first_original, original).removeprefix("your "),
                    gift=methods_text(gift)), "refund")
            params["payment_method"] = chosen
        if number:
            params["order"] = number
        try:
            proposal = self.service.propose(
                who.store_id, kind, params, customer_id=who.customer_id,
                verified_orders=list(who.verified_orders),
                conversation_id=who.conversation_id,
            )
        except ActionRefused as refused:
            return _refused(refused, kind, number)
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
    match = re.match(r"Exchange items from order (\S+): (.*)", summary)
    if match:
        return f"The exchange for order {match.group(1)} is requested: {match.group(2)}"
    match = re.match(r"Change items in order (\S+): (.*)", summary)
    if match:
        return f"The items of order {match.group(1)} are changed: {match.group(2)}"
    match = re.match(r"Ship order (\S+) to (.*?) instead of .*", summary)
    if match:
        return f"Order {match.group(1)} will now ship to {match.group(2)}."
    match = re.match(r"Pay for order (\S+) \(([^)]*)\) with (.*?) instead of .*?\.\s*(.*)",
                     summary)
    if match:
        return f"Order {match.group(1)} is now paid with {match.group(3)}. {match.group(4)}"
    match = re.match(r"Change your default address to (.*?)\. (.*)", summary)
    if match:
        return f"Your default address is now {match.group(1)}. {match.group(2)}"
    match = re.match(r"Remove from order (\S+): (.*)", summary)
    if match:
        return f"Removed from order {match.group(1)}: {match.group(2)}"
    return summary


def _refused(refused: ActionRefused, kind: str, number: str) -> ActionPlan:
    """The reply to a refusal: the policy's reason and what is possible instead (the
    pipeline hands it to a person when the shopper does not accept it, or the store
    turned the kind off: ``extra`` keeps the code and the alternatives for that)."""
    return ActionPlan(_refusal(refused), "action_refused", sources_order=number,
                      handoff=refused.code == "action_off", action_kind=kind,
                      extra={"code": refused.code, "refusal": refused.reason,
                             "alternatives": list(refused.alternatives)})


def _refusal(refused: ActionRefused) -> str:
    text = refused.reason.rstrip(".") + "."
    if refused.alternatives:
        text += " What I can do: " + "; ".join(refused.alternatives) + "."
    return text


def money_total(amounts: Sequence[Decimal]) -> Decimal:
    return sum(amounts, Decimal("0"))
