"""Target replies for training: short, varied, and built only from the facts shown.

Each function receives the data the fact line was rendered from (an order, a hit's
text) and the random generator of the build, and returns one to three sentences. The
exact strings that matter (order numbers, statuses, tracking numbers, prices, dates)
are formatted with the same helpers as the fact lines (:mod:`chatbot.answering.facts`),
so the reply copies them character for character; the dataset builder still rejects
any reply with a number the prompt does not contain.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from chatbot.answering.facts import Fact, day, distinctive_tokens, item_lines, money

# The model's "I cannot answer from these facts" reply; the pipeline's own fixed
# NO_MATCH text reads the same, so shoppers see one voice either way.
NO_ANSWER = (
    "I'm sorry, I don't have information about that. I can connect you with a person on "
    "our team who can help.",
    "I don't have the details to answer that, sorry. Would you like me to connect you with "
    "a person on our team?",
    "I'm not able to find that in our store information. I can connect you with a person on "
    "our team who can help.",
)

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[rng.randrange(len(options))]


def no_answer(rng: random.Random) -> str:
    return _pick(rng, NO_ANSWER)


# -- orders ------------------------------------------------------------------------------


def status_sentence(number: str, status: str, rng: random.Random) -> str:
    """A sentence that names the order and its exact status word."""
    s = status.strip()
    low = s.lower()
    if low.startswith("delivered"):
        options = [f"Your order {number} has been delivered.", f"Order {number} is delivered."]
    elif low.startswith("cancel"):
        options = [f"Your order {number} was cancelled.", f"Order {number} is cancelled."]
    elif low.startswith("pending"):
        options = [
            f"Your order {number} is {s} and has not shipped yet.",
            f"Order {number} is still {s}.",
        ]
    else:
        options = [
            f"Your order {number} is {s}.",
            f"Order {number} is currently {s}.",
            f"The status of order {number} is: {s}.",
        ]
    return _pick(rng, options)


def tracking_sentence(order: object, rng: random.Random, *, with_dates: bool = True) -> str:
    """Tracking number(s) with carrier and the delivered/expected date from the shipment."""
    shipments = [s for s in getattr(order, "shipments", []) if s.tracking_number]
    if not shipments:
        return _pick(rng, [
            "There is no tracking number yet.",
            "It doesn't have a tracking number yet.",
        ])
    parts = []
    for ship in shipments[:2]:
        carrier = f" ({ship.carrier})" if ship.carrier else ""
        text = _pick(rng, [
            f"The tracking number is {ship.tracking_number}{carrier}.",
            f"You can track it with tracking number {ship.tracking_number}{carrier}.",
            f"Tracking number: {ship.tracking_number}{carrier}.",
        ])
        if with_dates and ship.delivered_at:
            text += f" It was delivered on {day(ship.delivered_at)}."
        elif with_dates and ship.estimated_delivery:
            text += _pick(rng, [
                f" It is expected on {day(ship.estimated_delivery)}.",
                f" Expected delivery: {day(ship.estimated_delivery)}.",
            ])
        parts.append(text)
    return " ".join(parts)


def items_sentence(order: object, rng: random.Random) -> str:
    lines = item_lines(order)  # type: ignore[arg-type]
    listed = "; ".join(lines)
    number = getattr(order, "number", "")
    return _pick(rng, [
        f"Order {number} contains: {listed}.",
        f"In order {number} you have: {listed}.",
        f"Here are the items in order {number}: {listed}.",
    ])


def total_sentence(order: object, rng: random.Random) -> str:
    number = getattr(order, "number", "")
    total = money(getattr(order, "total", 0), getattr(order, "currency", "USD"))
    text = _pick(rng, [
        f"The total for order {number} was {total}.",
        f"You paid {total} for order {number}.",
        f"Order {number} came to {total} in total.",
    ])
    refunds = [p for p in getattr(order, "payments", []) if p.kind == "refund"]
    if refunds:
        refunded = money(sum(p.amount for p in refunds), getattr(order, "currency", "USD"))
        text += f" {refunded} has been refunded."
    return text


def address_sentence(order: object, rng: random.Random) -> str:
    addr = getattr(order, "shipping_address", {}) or {}
    fields = ("address1", "address2", "city", "state", "zip", "country")
    where = ", ".join(addr[k] for k in fields if addr.get(k))
    number = getattr(order, "number", "")
    return _pick(rng, [
        f"Order {number} is being shipped to {where}.",
        f"The shipping address for order {number} is {where}.",
    ])


def returns_sentence(order: object, policy: Fact | None, message: str, rng: random.Random) -> str:
    """Return eligibility from the order's status, plus the store's rule when it was shown."""
    number = getattr(order, "number", "")
    status = str(getattr(order, "status", "")).strip()
    low = status.lower()
    existing = list(getattr(order, "returns", []))
    if existing:
        ret = existing[-1]
        text = f"Order {number} already has a {ret.kind} that is {ret.status}."
    elif low.startswith("delivered"):
        text = _pick(rng, [
            f"Order {number} has been delivered, so you can request a return for it.",
            f"Yes - order {number} is delivered, so it can be returned.",
        ])
    elif low.startswith("cancel"):
        text = f"Order {number} was cancelled, so there is nothing to return."
    else:
        text = _pick(rng, [
            f"Order {number} is {status}, so it can't be returned yet; returns start once it "
            "has been delivered.",
            f"Order {number} is still {status}. Items can be returned after they are delivered.",
        ])
    if policy is not None:
        rule = best_sentences(fact_body(policy), message, 1, prefer=("return", "days"))
        if rule:
            text += " " + rule
    return text


# -- articles and products ---------------------------------------------------------------


def fact_body(fact: Fact) -> str:
    """A hit's text without the ``Title:`` prefix the fact line adds."""
    text = fact.text
    if fact.title and text.lower().startswith(fact.title.lower()):
        text = text[len(fact.title) :].lstrip(" :-")
    return text.rstrip("…").strip()


def best_sentences(
    text: str, question: str, n: int = 2, *, prefer: Sequence[str] = ()
) -> str:
    """The ``n`` sentences of ``text`` sharing most words with ``question`` (in text order);
    a sentence cut off by shortening (ending in '…') is never used."""
    body = " ".join(text.split()).rstrip("…")
    sentences = [s.strip() for s in _SENTENCE.split(body) if s.strip()]
    complete = [s for s in sentences if s[-1] in ".!?"]
    if not complete:
        return ""
    q = distinctive_tokens(question) | set(prefer)
    scored = sorted(
        range(len(complete)),
        key=lambda i: (-len(distinctive_tokens(complete[i]) & q), i),
    )
    keep = sorted(scored[:n])
    return " ".join(complete[i] for i in keep)


def line_sentences(fact: Fact) -> list[str]:
    """The sentences of a fact line's text (without its title), in line order; a sentence
    cut off by shortening (ending in '…') is left out."""
    # Split at full stops only: a list the line joined with '; ' stays one sentence.
    sentences = (s.strip() for s in _SENTENCE.split(" ".join(fact_body(fact).split())))
    return [s for s in sentences if s and s[-1] in ".!?"]


# The longest two-sentence restatement (characters); longer first sentences stand alone.
TWO_SENTENCE_CHARS = 300


def article_reply(fact: Fact, question: str, rng: random.Random) -> str:
    """Restate the sentence of an FAQ/policy fact line that answers ``question``.

    The pipeline puts the sentence that best answers the question first on the line
    (:func:`chatbot.answering.facts.best_sentences`), so the reply restates that first
    sentence word for word (every number and key word kept), followed by the second when
    the two are short enough to read as one answer; it never leads with a later sentence.
    Two sentences because the ranking is right about *the article* more often than about
    *the sentence*: the answer is often the runner-up.
    """
    sentences = line_sentences(fact)
    if not sentences:
        return ""
    core = sentences[0]
    if len(sentences) > 1 and len(core) + len(sentences[1]) <= TWO_SENTENCE_CHARS:
        core += " " + sentences[1]
    lead = _pick(rng, ("", "", "", "Sure! ", "Good question. ", "Happy to help. "))
    tail = _pick(rng, ("", "", "", " Is there anything else I can help with?"))
    return f"{lead}{core}{tail}"


_PRICE = re.compile(r"Price:\s*([^\n.]*\d)\.", re.IGNORECASE)
_OPTIONS = re.compile(r"(\w[\w ]*?) options:\s*([^.\n]+)\.")
_AVAIL = re.compile(r"Availability:\s*([^\n]+?)\.(?:\s|$)")


def product_reply(fact: Fact, question: str, asked: str, rng: random.Random) -> str:
    """Answer a product question (``asked``: price | options | availability | general)
    with the price, options and availability the product's fact line shows."""
    body = fact.text
    title = fact.title or fact.id
    price = _PRICE.search(body)
    options = {m.group(1).strip().lower(): m.group(2).strip() for m in _OPTIONS.finditer(body)}
    avail = _AVAIL.search(body)
    parts: list[str] = []
    if asked == "price" and price:
        parts.append(_pick(rng, [
            f"The {title} costs {price.group(1)}.",
            f"The {title} is {price.group(1)}.",
        ]))
    elif asked.startswith("option:") and options:
        name = asked.split(":", 1)[1]
        values = options.get(name) or next(iter(options.values()))
        label = name if name in options else next(iter(options))
        parts.append(f"The {title} comes in these {label} options: {values}.")
    elif asked == "availability" and avail:
        parts.append(f"Availability of the {title}: {avail.group(1)}.")
    if not parts:
        summary = best_sentences(fact_body(fact), question, 1)
        if not summary:
            return ""
        parts.append(summary)
    if asked != "price" and price and rng.random() < 0.5:
        parts.append(f"It costs {price.group(1)}.")
    return " ".join(parts)
