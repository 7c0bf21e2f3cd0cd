"""Fact lines: the compact, id-tagged statements the model answers from.

A 135M-parameter model copies a fact well from one short line and badly from a page,
so every retrieval hit or order becomes a single line such as::

    [order #W2611340] status: processed; items: Water Bottle (1000ml, glass, blue) x1 $47.84;
    tracking 357962501027

(shown wrapped here; it is one line in the prompt).

The ``[kind id]`` label is what the reply's sources cite, and the line text is
exactly what the grounding guard checks numbers against.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from chatbot.text import item_lines, money, shorten
from chatbot.types import Source

if TYPE_CHECKING:
    from knowledge_base.models import Order
    from knowledge_base.retrieval import Hit

# Longest fact text kept in a prompt; longer snippets are cut at a word boundary
# (also the default cut of ``shorten``: chatbot.text.SHORTEN_CHARS).
MAX_FACT_CHARS = 300

# Order-question topics the router detects; they pick which parts of an order line to show.
ORDER_TOPICS = (
    "status", "tracking", "items", "total", "returns", "address", "cancel", "change"
)

@dataclass(frozen=True)
class Fact:
    """One line of evidence given to the model, with the source it came from."""

    kind: str  # "order" | "faq" | "policy" | "product"
    id: str  # stable source id, e.g. "#W2611340" or "returns-window"
    text: str  # the statement itself, without the label
    title: str = ""
    url: str = ""
    # The fact as customer-facing sentences code wrote (what the claim guard puts in
    # place of a sentence that fails a check); empty: the text's own sentences.
    sentences: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"[{self.kind} {self.id}]"

    def line(self) -> str:
        """The fact as it appears in the prompt: label, space, text."""
        return f"{self.label} {self.text}"

    def source(self) -> Source:
        return Source(kind=self.kind, id=self.id, title=self.title or self.id, url=self.url)


def day(when: datetime | None) -> str:
    """A date as shoppers write it: ``May 3, 2024``."""
    if when is None:
        return ""
    return f"{when:%B} {when.day}, {when.year}"


# Sentences addressed to the agent, not the shopper (the τ wiki is written for agents);
# facts never pick them, and the claim guard (chatbot.answering.claims) drops replies
# that read them out.
AGENT_TEXT = re.compile(
    r"\bthe user'?s?\b|\buser id\b|\bthe agent\b|\bagents? (must|should|can|need)\b|"
    r"\bexplicit (user )?confirmation\b|\btransfer (the user|to a human)|\btool calls?\b|"
    r"\bact(ion)?s? on behalf\b|\bconsequential actions?\b|\bAPI\b|\(yes\)|"
    r"\b(taking|take) (the|this|any) action\b|\byou should (check|confirm|ask|verify)\b|"
    r"\b(this|the) action\b|\bcalled once\b|\bthe tool\b",
    re.IGNORECASE,
)
_CLAUSE = re.compile(r",\s+(?:and|but)\s+|;\s+")
# Policy written to the agent about the user, said to the shopper ("The user needs to confirm
# the order id and the reason" -> "You need to give the order id and the reason").
_FOR_THE_SHOPPER = tuple(
    (re.compile(p, re.IGNORECASE), r)
    for p, r in (
        (r"\bthe user needs to (confirm|provide|give)\b", "you need to give"),
        (r"\bafter user confirmation\b", "after you confirm"),
        (r"\bthe user'?s\b", "your"),
        (r"\bthe user (will|can|may|must|should|cannot|can't)\b", r"you \1"),
        # The verb agrees with "you" ("you need", never "you needs"): "If the user provides
        # a gift card, it must have enough balance" -> "If you provide a gift card, ...".
        (r"\bthe user needs\b", "you need"),
        (r"\bthe user has\b", "you have"),
        (r"\bthe user is\b", "you are"),
        (r"\bthe user does\b", "you do"),
        (r"\bthe user (?!id)([a-z]+?)(?<!s)s\b", r"you \1"),
        (r"\buser confirmation\b", "your confirmation"),
    )
)


def customer_facing(sentence: str) -> str | None:
    """``sentence`` without its clauses addressed to the agent ("An order can only be
    returned if its status is 'delivered', and you should check its status before taking
    the action" -> "An order can only be returned if its status is 'delivered'."); None
    when nothing is left for the shopper."""
    for pattern, replacement in _FOR_THE_SHOPPER:
        sentence = pattern.sub(replacement, sentence)
    if not AGENT_TEXT.search(sentence):
        return sentence[:1].upper() + sentence[1:]
    kept = [c.strip() for c in _CLAUSE.split(sentence) if c.strip() and not AGENT_TEXT.search(c)]
    if not kept:
        return None
    text = "; ".join(kept).rstrip(".;, ")
    return text + "."
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=[A-Z0-9\"'(])")
# List bullets that flattened Markdown leaves inside a line: " - Phone: ...".
_BULLET = re.compile(r"(?:^|\s+)-\s+(?=\S)")
_STOP = {
    "about",
    "after",
    "again",
    "also",
    "been",
    "before",
    "being",
    "does",
    "doing",
    "from",
    "have",
    "here",
    "into",
    "just",
    "like",
    "more",
    "much",
    "only",
    "other",
    "over",
    "some",
    "such",
    "than",
    "that",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "very",
    "want",
    "what",
    "when",
    "where",
    "which",
    "while",
    "will",
    "with",
    "would",
    "your",
    "yours",
    "could",
    "should",
    "know",
    "tell",
    "please",
    "thanks",
    "thank",
    # Three-letter function words (content words of three letters, "tax", "box", "fee",
    # "ups", still count).
    "all",
    "and",
    "any",
    "are",
    "but",
    "can",
    "did",
    "for",
    "get",
    "has",
    "how",
    "its",
    "may",
    "not",
    "our",
    "per",
    "the",
    "was",
    "who",
    "why",
    "you",
}


def _stems(text: str) -> set[str]:
    # Five-letter prefixes are a crude stem that makes "returns"/"returned" and
    # "shipping"/"shipped" meet, which is all sentence picking needs; a few store words
    # that mean the same meet too ("change" / "modify", "money back" / "refund").
    lowered = _SAME_MEANING.sub(lambda m: _SYNONYMS[m.group(0)], text.lower())
    return {w[:5] for w in re.findall(r"[a-z0-9]+", lowered) if len(w) > 2 and w not in _STOP}


_SYNONYMS = {
    "change": "modify", "changed": "modified", "changing": "modifying", "edit": "modify",
    "money back": "refund", "reimburse": "refund", "sent back": "returned",
}
_SAME_MEANING = re.compile(r"\b(" + "|".join(sorted(_SYNONYMS, key=len, reverse=True)) + r")\b")


def split_sentences(text: str) -> list[str]:
    """Sentences and list items of ``text``; a list stays with the line that introduces it
    ("We have three stores: Portland ...; Seattle ...; Denver ...")."""
    pieces: list[str] = []
    in_list = False
    for i, segment in enumerate(_BULLET.split(" ".join(text.split()))):
        sentences = [p for p in _SENTENCE_END.split(segment.strip()) if p]
        if not sentences:
            continue
        if i > 0 and pieces and (in_list or pieces[-1].endswith(":")):
            sep = "; " if in_list else " "
            pieces[-1] = f"{pieces[-1].rstrip(',;')}{sep}{sentences[0].rstrip(',;')}"
            # An item that runs on into more sentences ends the list.
            in_list = len(sentences) == 1
            pieces += sentences[1:]
            continue
        in_list = False
        pieces += sentences
    return pieces


class SentenceEmbedder(Protocol):
    """What sentence ranking needs from :class:`knowledge_base.embeddings.Embedder`."""

    def encode(self, texts: Sequence[str]) -> Any: ...

    def encode_query(self, text: str) -> Any: ...


# Weight of the (0..1) shared-word score next to the cosine similarity in sentence ranking.
LEXICAL_WEIGHT = 0.25

# Sentence vectors by text: articles repeat from one question to the next, so each
# sentence is embedded once per process (bounded; a plain dict is enough).
_VECTOR_CACHE: dict[tuple[int, str], Any] = {}
_VECTOR_CACHE_SIZE = 4096
_VECTOR_LOCK = threading.Lock()


def _similarities(embedder: SentenceEmbedder, sentences: Sequence[str], query: str) -> list[float]:
    """Cosine similarity of each sentence to ``query`` (the embedder's vectors are unit
    length, so a dot product)."""
    import numpy as np

    key = id(embedder)
    with _VECTOR_LOCK:
        missing = [s for s in dict.fromkeys(sentences) if (key, s) not in _VECTOR_CACHE]
    if missing:
        vectors = embedder.encode(missing)
        with _VECTOR_LOCK:
            if len(_VECTOR_CACHE) + len(missing) > _VECTOR_CACHE_SIZE:
                _VECTOR_CACHE.clear()
            for sentence, vector in zip(missing, vectors, strict=True):
                _VECTOR_CACHE[(key, sentence)] = vector
    with _VECTOR_LOCK:
        matrix = np.stack([_VECTOR_CACHE[(key, s)] for s in sentences])
    return [float(x) for x in matrix @ np.asarray(embedder.encode_query(query))]


def sentence_similarity(embedder: SentenceEmbedder, text: str, query: str) -> float:
    """The MiniLM cosine of ``query`` and the sentence of ``text`` closest to it in meaning
    (how near the text comes to saying what is asked)."""
    sentences = split_sentences(text)
    return max(_similarities(embedder, sentences, query), default=0.0) if sentences else 0.0


def topic_stems(text: str) -> set[str]:
    """The word stems of ``text`` that carry a topic (no question or function words)."""
    return _stems(text)


def sentence_scores(
    sentences: Sequence[str], query: str, embedder: SentenceEmbedder | None = None
) -> list[float]:
    """How well each sentence answers ``query``: shared words, plus meaning when an
    embedder is given.

    The lexical part counts the query's word stems a sentence contains, each weighted by
    1 / (number of sentences containing it), so words found in few sentences count more
    (``phone`` beats ``support`` on a contact page); it is scaled to 0..1 by the best
    sentence. The semantic part is the MiniLM cosine similarity of sentence and query
    (retrieval has already embedded the query, so only new sentences cost anything).
    Meaning leads and shared words only break near-ties (``LEXICAL_WEIGHT``): word
    overlap is fooled by a quoted phrase ("needed" in "'no longer needed'" answering
    "which status is needed?"), see docs/answering.md.
    """
    wanted = _stems(query)
    stems = [_stems(sentence) & wanted for sentence in sentences]
    spread = {w: sum(1 for found in stems if w in found) for w in wanted}
    lexical = [sum(1 / spread[w] for w in found) for found in stems]
    top = max(lexical, default=0.0)
    scores = [x / top for x in lexical] if top > 0 else [0.0] * len(sentences)
    if embedder is not None and sentences:
        cosines = _similarities(embedder, sentences, query)
        scores = [LEXICAL_WEIGHT * s + c for s, c in zip(scores, cosines, strict=True)]
    for asks, has in _ANSWER_TYPES:
        if asks.search(query):
            # "What's the return window?" is answered by the sentence with a duration in
            # it, whatever other words of the question a sentence shares.
            scores = [s + ANSWER_TYPE_BONUS * bool(has.search(t)) for s, t in
                      zip(scores, sentences, strict=True)]
    for asks, has in _NOT_FOR:
        if asks.search(query):
            scores = [s - ANSWER_TYPE_BONUS * bool(has.search(t)) for s, t in
                      zip(scores, sentences, strict=True)]
    return scores


ANSWER_TYPE_BONUS = 0.3
# Questions for a contact datum, and the datum: a sentence that holds the phone number or
# the address asked for answers the question (see ``gives_contact_asked``).
_CONTACT_TYPES = (
    (
        re.compile(r"\b(phone|call|number to|telephone)\b", re.I),
        re.compile(r"\d{3}[-.\s]\d{3}[-.\s]\d{4}\b"),
    ),
    (re.compile(r"\be-?mail\b", re.I), re.compile(r"@")),
)
_ANSWER_TYPES = (
    (
        re.compile(r"\b(how long|window|deadline|how many (days|weeks)|how soon|when)\b", re.I),
        re.compile(r"\b\d+(-\d+)?\s+(business\s+)?(days?|weeks?|months?|years?|hours?)\b", re.I),
    ),
    (
        re.compile(r"\b(how much|cost|price|fee|charge)\b", re.I),
        re.compile(r"\$\s?\d"),
    ),
    *_CONTACT_TYPES,
    (
        # "What products were included in my order?" is answered by the item list (order
        # lines write a quantity as "x2"), not by the order's status.
        re.compile(r"\b(items?|products?|contents?|included|what did i (order|buy|get)|"
                   r"what(?:'s| is| was) in)\b", re.I),
        re.compile(r"\bx\d+\b"),
    ),
    (
        # "Where does my refund go?" is answered by where money or items go to.
        re.compile(r"\bwhere\b.{0,40}\b(go|goes|went|sent|refund\w*|money)\b", re.I),
        re.compile(r"\b(go|goes|sent|back|refunded|credited) to\b", re.I),
    ),
)


def gives_contact_asked(question: str, sentence: str) -> bool:
    """Whether ``question`` asks for a phone number or an email address and ``sentence``
    holds one ("What is your customer service phone number?" / "Phone: 1-800-555-0142.")."""
    return any(asks.search(question) and has.search(sentence) for asks, has in _CONTACT_TYPES)


# Sentences whose rule is for someone else: a shopper abroad (the pipeline marks the
# question "international": "I live in Canada, is the return free for me too?") is not
# answered by the rule for US addresses ("Returns within the US are free").
_NOT_FOR = (
    (
        re.compile(r"\binternational\b", re.I),
        re.compile(r"\b(within|inside|in) the (US|U\.S\.|United States|contiguous)\b|"
                   r"\b(US|domestic) (addresses|orders|customers)\b", re.I),
    ),
)


def best_sentences(
    text: str,
    query: str,
    n: int,
    max_chars: int = MAX_FACT_CHARS,
    *,
    embedder: SentenceEmbedder | None = None,
) -> str:
    """Up to ``n`` sentences of ``text`` that best answer ``query``, best first, as one
    string (see :func:`best_sentence_list`)."""
    return " ".join(best_sentence_list(text, query, n, max_chars, embedder=embedder))


def best_sentence_list(
    text: str,
    query: str,
    n: int,
    max_chars: int = MAX_FACT_CHARS,
    *,
    embedder: SentenceEmbedder | None = None,
) -> list[str]:
    """Up to ``n`` sentences of ``text`` that best answer ``query``, best first.

    A list item stays in the sentence that introduces it ("We have three stores:
    Portland ...; Seattle ...; Denver ..."), and the list keeps them apart: splitting the
    joined text again would cut the list at its semicolons.

    A small model copies from one or two sentences reliably and from a paragraph badly,
    so code picks the sentences and the model only rephrases them (see
    :func:`sentence_scores`). The best sentence is always kept and comes first, because
    the model mostly restates the first sentence of a line; runners-up follow it while
    the total stays within ``max_chars``. Without an embedder, a runner-up must share a
    word with the query: a sentence with nothing of the question is one more thing to
    restate by mistake.
    """
    # Policy written for the agent ("the user must confirm ...") is never read out.
    sentences = [s for s in map(customer_facing, split_sentences(text)) if s]
    if not sentences:
        return []
    scores = sentence_scores(sentences, query, embedder)
    lexical = sentence_scores(sentences, query) if embedder is not None else scores
    # Earlier sentences win ties: articles usually lead with the answer.
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    best = _best_clause(sentences[ranked[0]], query)
    if best is not None:
        # The best sentence lists several priced options and the question names one.
        return [best]
    keep = [ranked[0]]
    used = len(sentences[ranked[0]])
    for i in ranked[1:n]:
        # (Cutting runners-up below 0.6x the best score was tried: no gain on τ policy
        # questions, and the fact lines lost needed sentences, 0.89 -> 0.83.)
        if embedder is None and lexical[i] <= 0:
            break
        if used + 1 + len(sentences[i]) > max_chars:
            break
        keep.append(i)
        used += 1 + len(sentences[i])
    return [sentences[i] for i in keep]


def _best_clause(sentence: str, query: str) -> str | None:
    """The one clause of a multi-price sentence that the query names ("and expedited?" ->
    "Expedited shipping takes 2-3 business days for $14.95."), else None."""
    clauses = [c.strip() for c in re.split(r",\s+and\s+|;\s+", sentence) if c.strip()]
    priced = [c for c in clauses if "$" in c]
    if len(clauses) < 2 or len(priced) < 2:
        return None
    wanted = _stems(query)
    named = [c for c in clauses if _stems(c) & wanted - _shared_stems(clauses)]
    if len(named) != 1:
        return None
    text = named[0].rstrip(".")
    return text[:1].upper() + text[1:] + "."


def _shared_stems(clauses: Sequence[str]) -> set[str]:
    """Stems found in more than one clause (they tell no clause apart)."""
    seen: dict[str, int] = {}
    for clause in clauses:
        for stem in _stems(clause):
            seen[stem] = seen.get(stem, 0) + 1
    return {s for s, n in seen.items() if n > 1}


# Product card lines (see knowledge_base.chunking.product_text) a question is about.
_CARD_TOPICS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"\b(price|cost|how much|cheap|expensive|\$)", re.I), ("price",)),
    (re.compile(r"\bcolou?rs?\b", re.I), ("color options",)),
    (re.compile(r"\bsizes?\b|\bfit\b", re.I), ("size options",)),
    (re.compile(r"\b(options?|variants?|come in|versions?|kinds?)\b", re.I), ("options",)),
    (re.compile(r"\b(stock|available|availability|sold out|buy)\b", re.I), ("availability",)),
    (re.compile(r"\bsku\b", re.I), ("skus",)),
)


def product_card_text(card: str, query: str, *, stock: bool = True) -> str:
    """The lines of a product card that answer ``query``, plus its price.

    A question about colours gets the colour line; a general one ("do you sell rain
    jackets?") gets the first sentence of the description, the price and availability.
    """
    lines = [" ".join(line.split()) for line in card.splitlines() if line.strip()]
    labelled = {line.split(":", 1)[0].lower(): line for line in lines if ":" in line[:24]}
    wanted: list[str] = []
    for pattern, labels in _CARD_TOPICS:
        if pattern.search(query):
            wanted += [k for k in labelled if any(k.endswith(lb) or k == lb for lb in labels)]
    specific = [k for k in wanted if k in ("color options", "colour options", "size options")]
    if specific:
        # "What colours does it come in?" names the colours: the size line would only be
        # copied as an answer by mistake.
        wanted = [k for k in wanted if k in specific or not k.endswith("options")]
    picked: list[str] = []
    if not wanted:
        description = next((ln for ln in lines if ":" not in ln[:24]), "")
        if description:
            picked.append(best_sentences(description, query, 1))
        wanted = ["availability"]
    keys = [*wanted, "price"]
    if not stock:
        # A fact for the asked variant (its price and stock) stands beside this line: the
        # card's product-wide price range and availability would only blur it.
        keys = [k for k in keys if k not in ("availability", "price")]
    picked += [labelled[key] for key in dict.fromkeys(keys) if key in labelled]
    return " ".join(picked)


def hit_fact(
    hit: Hit,
    query: str = "",
    sentences: int = 2,
    *,
    embedder: SentenceEmbedder | None = None,
    stock: bool = True,
) -> Fact:
    """A retrieval hit as a fact line: ``Title: the snippet's sentences that fit the query``
    (ranked with ``embedder`` too when given; see :func:`sentence_scores`)."""
    if hit.kind == "product" and query:
        card = product_card_text(hit.snippet, query, stock=stock)
        text = f"{hit.title.rstrip(':.')}: {card}"
        said = tuple(
            f"{hit.title.rstrip(':.')} {_lower_first(line)}" for line in split_sentences(card)
        )
        return Fact(
            kind=hit.kind, id=hit.id, text=shorten(text), title=hit.title, url=hit.url,
            sentences=said,
        )
    snippet = " ".join(hit.snippet.split())
    if snippet.lower().startswith(hit.title.lower()):
        snippet = snippet[len(hit.title) :].lstrip(" :.-")
    picked: list[str] | None = None
    if query:
        picked = best_sentence_list(
            snippet, query, sentences, MAX_FACT_CHARS - len(hit.title) - 2, embedder=embedder
        )
        snippet = " ".join(picked)
    if hit.title.rstrip().endswith("?") and snippet:
        # A title phrased as a shopper's question ("My jacket zipper broke. Is it
        # covered?") is not a fact: restated, it reads as the bot's own words.
        text = snippet
    else:
        text = f"{hit.title.rstrip(':.')}: {snippet}" if snippet else hit.title
    return Fact(
        kind=hit.kind, id=hit.id, text=shorten(text), title=hit.title, url=hit.url,
        sentences=tuple(picked if picked is not None else split_sentences(snippet)),
    )


def _lower_first(line: str) -> str:
    """ "Color options: Black." -> "color options: Black." (after a product name)."""
    return line[:1].lower() + line[1:] if line[:2].istitle() or line[:1].isupper() else line


def _shipment_text(order: Order) -> str:
    parts = []
    for ship in order.shipments:
        if not ship.tracking_number:
            continue
        details = [d for d in (ship.carrier, ship.status.replace("_", " ")) if d]
        if ship.delivered_at:
            details.append(f"delivered {day(ship.delivered_at)}")
        elif ship.estimated_delivery:
            details.append(f"expected {day(ship.estimated_delivery)}")
        extra = f" ({', '.join(details)})" if details else ""
        parts.append(f"tracking {ship.tracking_number}{extra}")
    return "; ".join(parts) if parts else "no tracking number yet"


def _returns_text(order: Order) -> str:
    parts = []
    for ret in order.returns:
        text = f"{ret.kind} {ret.status}"
        if ret.refund_amount is not None:
            text += f", refund {money(ret.refund_amount, order.currency)}"
        parts.append(text)
    refunds = [p for p in order.payments if p.kind == "refund"]
    if refunds:
        total = sum((p.amount for p in refunds), Decimal("0"))
        parts.append(f"refunded {money(total, order.currency)}")
    return "; ".join(parts)


def order_fact(order: Order, topics: Iterable[str] = ()) -> Fact:
    """One order as a fact line. ``topics`` (see ``ORDER_TOPICS``) narrow it to what was
    asked, which keeps the line short enough for the model to copy from; status is
    always included."""
    wanted = set(topics) or {"status", "items", "tracking", "total", "returns"}
    parts = [f"status: {order.status}"]
    # Tracking wanted (asked for, or no topic): right after the status, where the model
    # copies from (docs/answering.md, "Order lines").
    tracking_first = "tracking" in wanted
    if tracking_first:
        parts.append(_shipment_text(order))
    if order.placed_at is not None:
        parts.append(f"placed {day(order.placed_at)}")
    if wanted & {"items", "returns", "total", "cancel"}:
        parts.append("items: " + ", ".join(item_lines(order)))
    elif order.items:
        # Names only: enough to tell orders apart ("the one with the boots").
        parts.append("items: " + ", ".join(dict.fromkeys(item.name for item in order.items)))
    if wanted & {"total", "cancel"}:
        parts.append(f"total {money(order.total, order.currency)}")
        shipping = getattr(order, "shipping_cost", None)
        if "total" in wanted and shipping is not None:
            parts.append(f"shipping {money(shipping, order.currency)}")
    if "status" in wanted and not tracking_first:
        parts.append(_shipment_text(order))
    if "returns" in wanted or "total" in wanted:
        returns = _returns_text(order)
        if returns:
            parts.append(returns)
    if "address" in wanted and order.shipping_address:
        addr = order.shipping_address
        fields = ("address1", "address2", "city", "state", "zip", "country")
        parts.append("ship to " + ", ".join(addr[k] for k in fields if addr.get(k)))
    possible = eligibility(order.status)
    asks_what_is_possible = bool(wanted & {"cancel", "returns", "address", "change"})
    if asks_what_is_possible and possible:
        parts.append(possible)
    # The status and what it allows in one sentence: the answer to "can I cancel it?".
    lead = f"Order {order.number} is {order.status}"
    if asks_what_is_possible and possible:
        said = [f"{lead}, so {possible}."]
    elif tracking_first and any(s.tracking_number for s in order.shipments):
        # "Where is it?" is answered by the status and the tracking together.
        said = [f"{lead}: {_shipment_text(order)}."]
    else:
        said = [f"{lead}."]
    if (tracking_first or "status" in wanted) and not said[0].startswith(f"{lead}:"):
        said.append(_capital(_shipment_text(order)) + ".")
    if wanted & {"items", "returns", "total", "cancel"}:
        said.append("Items: " + ", ".join(item_lines(order)) + ".")
    if wanted & {"total", "cancel"}:
        said.append(f"The total was {money(order.total, order.currency)}.")
        shipping = getattr(order, "shipping_cost", None)
        if "total" in wanted and shipping is not None:
            said.append(f"Shipping was {money(shipping, order.currency)}.")
    return Fact(
        kind="order",
        id=order.number,
        text=shorten("; ".join(parts), MAX_FACT_CHARS + 160),
        title=f"Order {order.number}",
        sentences=tuple(said),
    )


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# What an order's status allows (the demo store's and the τ store's policy alike:
# cancel or change while pending; return or exchange once delivered).
_NOT_YET = (
    "it can no longer be cancelled or changed; a return or exchange is possible after delivery"
)
_ELIGIBILITY: tuple[tuple[str, str], ...] = (
    ("pending (item", "it can no longer be changed, but it can still be cancelled"),
    ("pending", "it can still be cancelled or changed (address, size or colour, payment)"),
    ("process", _NOT_YET),
    ("shipped", _NOT_YET),
    ("in transit", _NOT_YET),
    ("out for delivery", _NOT_YET),
    ("delivered", "it can no longer be cancelled; items can be returned or exchanged"),
    ("cancelled", "it cannot be changed or returned"),
)


def allowed_actions(status: str) -> frozenset[str]:
    """The order changes a shopper may ask for in ``status`` (the rules ``eligibility``
    words): cancel / change while pending, return / exchange once delivered."""
    lowered = status.lower()
    if lowered.startswith("pending (item"):
        return frozenset({"cancel"})
    if lowered.startswith("pending"):
        return frozenset({"cancel", "change"})
    if lowered.startswith("delivered"):
        return frozenset({"return", "exchange"})
    return frozenset()


def eligibility(status: str) -> str:
    """What can still be done with an order in ``status`` ("" when nothing applies)."""
    lowered = status.lower()
    for prefix, text in _ELIGIBILITY:
        if lowered.startswith(prefix):
            return text
    return ""


def stock_fact(product: Any, query: str | Sequence[str]) -> Fact | None:
    """Price and stock of the variants of ``product`` that ``query`` names ("Storm Blue
    ... in L"): one line per variant, computed from the database, never guessed.

    None when the query names no option value of the product.
    """
    variants = list(product.variants)
    named = _named_variants(variants, query)
    if not named:
        return None
    title = product.title
    lines, said = [], []
    for variant in named[:6]:
        label = variant.title or " / ".join(str(v) for v in (variant.options or {}).values())
        in_stock = variant.available and (variant.inventory is None or variant.inventory > 0)
        state = "in stock" if in_stock else "out of stock"
        price = money(variant.price) if variant.price is not None else ""
        lines.append(f"{label}: {price + ', ' if price else ''}{state}")
        costs = f" costs {price} and" if price else ""
        said.append(f"The {title} in {label}{costs} is {state}.")
    return Fact(
        kind="product",
        id=product.source_id,
        text=f"{title} variants: " + "; ".join(lines),
        title=title,
        url=getattr(product, "url", "") or "",
        sentences=tuple(said),
    )


_SIZE_WORDS = {
    "xs": "XS", "extra small": "XS", "small": "S", "s": "S", "medium": "M", "m": "M",
    "large": "L", "l": "L", "extra large": "XL", "xl": "XL", "xxl": "XXL", "2xl": "XXL",
}


def _named_variants(variants: Sequence[Any], query: str | Sequence[str]) -> list[Any]:
    """The variants whose option values the query names (every named option must match).

    ``query`` may be several messages, oldest first: for each option the newest message
    that names a value of it decides ("glass, 1.5 liters, for induction?" then "and the
    gas one?" means glass / 1.5 liters / gas).
    """
    texts = [query] if isinstance(query, str) else list(query)
    wanted: dict[str, set[str]] = {}
    for text in texts:
        for name, values in _named_options(variants, text).items():
            wanted[name] = values
    if not wanted:
        return []
    return [
        v
        for v in variants
        if all(str((v.options or {}).get(name)) in vals for name, vals in wanted.items())
    ]


def _singular(words: str) -> str:
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words.split())


def _named_options(variants: Sequence[Any], query: str) -> dict[str, set[str]]:
    """The option values one message names, by option name ("1.5 liter" names "1.5
    liters": plurals are dropped on both sides)."""
    lowered = " " + _singular(" ".join(re.findall(r"[a-z0-9.]+", query.lower()))) + " "
    values: dict[str, set[str]] = {}
    for variant in variants:
        for name, value in (variant.options or {}).items():
            values.setdefault(name, set()).add(str(value))
    wanted: dict[str, set[str]] = {}
    for name, options in values.items():
        for value in options:
            words = _singular(" ".join(re.findall(r"[a-z0-9.]+", value.lower())))
            if len(words) > 2:
                hit = f" {words} " in lowered
            else:
                # "L", "M", "10": only after "in" / "size" ("it's" must not mean size S).
                hit = bool(re.search(rf" (?:in|size|a|an) {re.escape(words)} ", lowered))
            if not hit and name.lower() == "size":
                hit = any(
                    _SIZE_WORDS[w] == value.upper() and f" {w} " in lowered
                    for w in _SIZE_WORDS
                    if len(w) > 2
                )
            if not hit and value.lower() in ("yes", "no"):
                # "with water resistance" -> water resistance: yes ("without ...": no)
                said = _singular(" ".join(re.findall(r"[a-z0-9.]+", name.lower())))
                if f" {said} " in lowered:
                    negative = re.search(rf" (no|without|non|not) {re.escape(said)} ", lowered)
                    hit = (value.lower() == "no") == bool(negative)
            if hit:
                wanted.setdefault(name, set()).add(value)
    return wanted


def order_summary_fact(order: Order) -> Fact:
    """A one-glance line for listing several orders: status and item names only."""
    names = ", ".join(dict.fromkeys(item.name for item in order.items)) or "no items"
    return Fact(
        kind="order",
        id=order.number,
        text=f"status: {order.status}; items: {names}",
        title=f"Order {order.number}",
    )


_WORD = re.compile(r"[a-z0-9]+")


def distinctive_tokens(text: str) -> set[str]:
    """Lower-case words of 4+ letters and all numbers (used by the training-set builder)."""
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 4 or w.isdigit()}


def distinctive_words(text: str) -> set[str]:
    """Lower-case words of 4+ letters: what the word-overlap check compares."""
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 4 and not w.isdigit()}


def _numbers(text: str) -> set[str]:
    # Whole normalised numbers ("149.00" -> "149"), never fragments such as "00".
    from chatbot.answering.guard import extract_claims

    claims = extract_claims(text)
    return {n for n in claims.numbers if len(n) >= 2} | claims.codes


def facts_used(reply: str, facts: Sequence[Fact]) -> list[Fact]:
    """The facts a reply visibly relies on: it cites the order, or shares a number
    (of 2+ digits) or 2+ distinctive words with the fact."""
    reply_words = distinctive_words(reply)
    reply_numbers = _numbers(reply)
    used = []
    for fact in facts:
        words = reply_words & (distinctive_words(fact.text) - _COMMON)
        numbers = reply_numbers & _numbers(fact.text)
        cites_order = fact.kind == "order" and fact.id.lstrip("#").lower() in reply.lower()
        if cites_order or numbers or len(words) >= 2:
            used.append(fact)
    return used


# Words too common in store text to show that a reply used one particular fact.
_COMMON = {
    "your",
    "order",
    "orders",
    "with",
    "that",
    "this",
    "have",
    "will",
    "from",
    "items",
    "item",
    "status",
    "please",
    "store",
    "days",
    "they",
    "their",
    "when",
    "what",
    "which",
}
