"""The claim guard: every sentence of a reply is checked against the facts before it is shown.

The number guard (:mod:`chatbot.answering.guard`) catches a made-up price or tracking
number; a 135M model also makes claims without numbers: "your order has been delivered
and refunded" (copied from a shopper's "reply only with ..."), "changing the size is not
possible" (the article says it is, while pending), "available" for a variant with no
stock, the right prices on the wrong shipping methods, or "I can't find that" while
citing the article that answers it. So the reply is held back one sentence at a time
and each sentence must pass every check below against the fact lines the model was
given (never against the shopper's words: an instruction typed by the shopper is not
a fact):

- ``number``: every order number, price, quantity and date is in the facts;
- ``status``: every status word (delivered, refunded, cancelled, shipped, returned,
  processed, pending, in transit, in stock, out of stock ...) is in the facts;
- ``polarity``: the sentence and the fact sentence it restates agree on "not" / "no
  longer" / "can't" (a leading "Yes" / "No" counts too);
- ``role``: a price or date sits next to the words its fact clause has ("expedited
  ... $14.95", never "expedited ... $29.95");
- ``product``: option values (colours, sizes) named beside a product are that
  product's own;
- ``agent_text``: policy written for agents ("the user must confirm ...") is never read
  out;
- ``refusal``: "I don't know" / "I can't find" is not said when code decided the facts
  answer the question (the handoff decision is code's, not the model's).

A sentence that fails is replaced by the fact's own words (the fact sentence that best
answers the question, if not already said) or dropped; each firing is counted by reason
for ``/metrics`` and the eval. Nothing unchecked is ever shown, and no placeholder is
spliced into a sentence.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from chatbot.answering.facts import (
    AGENT_TEXT,
    Fact,
    SentenceEmbedder,
    allowed_actions,
    customer_facing,
    sentence_scores,
    split_sentences,
)
from chatbot.answering.guard import extract_claims, find_unsupported

# Status words and the canonical claim each makes. Order: longest phrases first.
_STATUS_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"out of stock|sold out|unavailable|not (?:currently )?(?:available|in stock)", "no_stock"),
    (r"in stock|(?:is|are) (?:currently |still )?available(?! in\b| for\b| to\b| on\b)", "stock"),
    (r"out for delivery", "out for delivery"),
    (r"in transit", "in transit"),
    (r"deliver(?:ed)\b", "delivered"),
    (r"refund(?:ed)\b", "refunded"),
    (r"cancell?ed\b", "cancelled"),
    (r"\bshipped\b|has shipped|have shipped", "shipped"),
    (r"\breturned\b", "returned"),
    (r"\bexchanged\b", "exchanged"),
    (r"\bprocess(?:ed|ing)\b", "processed"),
    (r"\bpending\b", "pending"),
)
_STATUS = [(re.compile(p, re.IGNORECASE), name) for p, name in _STATUS_PATTERNS]
# A status word in a reply sentence that talks about an order (needs an order fact).
_ABOUT_AN_ORDER = re.compile(
    r"\b(your|the|this|that) (order|package|parcel|item|refund)s?\b"
    r"|#\s?[A-Z]{0,3}\d{3,}",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"\b(not|no longer|cannot|can't|can not|won't|isn't|aren't|doesn't|don't|didn't|"
    r"never|unable|nothing|none|no)\b(?!\s+(?:problem|worries|extra|additional|minimum))"
    r"|n't\b",
    re.IGNORECASE,
)
_LEADING_YES = re.compile(r"^\W*(yes|yep|sure|absolutely|of course)\b", re.IGNORECASE)
# A sentence that only says yes ("Sure!", "Yes, of course.").
_BARE_YES = re.compile(
    r"^\W*(yes|yep|sure|absolutely|of course|certainly)\b[\s,!.]*"
    r"((it is|you can|we do|of course|certainly)[\s!.]*)?$",
    re.IGNORECASE,
)
_CONDITION = re.compile(r"\b(only|must|unless|except|as long as|provided that)\b", re.I)
# A yes/no question, also after what the shopper said first ("I live in Canada, is the
# return free for me too?").
_YES_NO_QUESTION = re.compile(
    r"(?:^|[,.;:!?]\s*)\W*(can|could|may|do|does|did|is|are|was|will|would|should|have|has)"
    r"\b",
    re.IGNORECASE,
)
_LEADING_NO = re.compile(r"^\W*no\b(?!\s+(?:problem|worries))", re.IGNORECASE)
REFUSAL = re.compile(
    r"\b(don't|do not|doesn't) (have|know|see)\b|\bcan(?:'t|not| not) (find|see|help|confirm|"
    r"answer)\b|\bnot sure\b|\bunable to\b|\bno information\b|\bconnect(ing)? you\b|"
    r"\b(human|live) agent\b|\bperson on our team\b|\bsomeone from our team\b",
    re.IGNORECASE,
)
_MONEY = re.compile(r"\$\s?\d[\d,]*(?:\.\d+)?")
# A number or an address: a short sentence that holds one still answers something.
_DATUM = re.compile(r"\d|@")
_CLAUSE_SPLIT = re.compile(r";\s+|,\s+(?:and|but|while|whereas)\s+|(?<=[.!?])\s+|\s+-\s+")
_WORDS = re.compile(r"[a-z][a-z'-]+")
_CAPITALISED = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-z]+(?:\s[A-Z][a-z]+)*)\b")
# Common capitalised words that are not option values.
_NOT_VALUES = {
    "I",
    "Men",
    "Women",
    "Kids",
    "Our",
    "We",
    "You",
    "Your",
    "The",
    "It",
    "This",
    "That",
    "Yes",
    "No",
    "Order",
    "Orders",
    "Account",
    "Pacific",
    "Mon",
    "Monday",
    "Friday",
}
_GENERIC = {
    "shipping",
    "order",
    "orders",
    "business",
    "days",
    "day",
    "takes",
    "take",
    "costs",
    "cost",
    "price",
    "item",
    "items",
    "your",
    "the",
    "and",
    "for",
    "with",
    "our",
    "you",
    "arrives",
    "arrive",
    "delivery",
    "within",
    "after",
    "before",
    "free",
    "per",
    "each",
}
_ASKING = re.compile(r"\b(orders?|my|want|wants|need|needs|like|please|yes|hi|hello)\b", re.I)
# The model talking about its instructions ("I can only go by the facts").
_META = re.compile(
    r"\b(the|these|my|given) facts\b|\bsystem prompt\b|\bmy instructions\b|"
    r"\boffer a human agent\b|\bsay you don'?t know\b",
    re.IGNORECASE,
)
_POSSIBILITY = re.compile(
    r"[^;:.\n]*\b(can|cannot|can't|possible|once it|after delivery)\b[^;:.\n]*", re.IGNORECASE
)
_LABEL = re.compile(r"\[(?:order|product|faq|policy)\s+[^\]]*\]\s*", re.IGNORECASE)
_ORDER_CODE = re.compile(r"#?\b[A-Za-z]{0,3}\d{4,}\b")
_PRICED_CLAUSES = re.compile(r",\s+and\s+|;\s+")
_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")


@dataclass
class Verdict:
    """The guard's ruling on one sentence."""

    ok: bool
    reason: str = ""
    replacement: str | None = None


@dataclass
class ClaimContext:
    """What the sentences of one reply are checked against."""

    facts: Sequence[Fact]
    question: str
    # Code decided the facts answer the question (so "I don't know" is wrong).
    grounded: bool = True
    # The previous reply, when the shopper asked something else (its sentences are not
    # said again unless nothing new can be said; "" when repeating is right).
    previous_reply: str = ""
    # Ranks the answer sentences by meaning too (retrieval's MiniLM), when given.
    embedder: SentenceEmbedder | None = None
    _fact_sentences: list[tuple[Fact, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for fact in self.facts:
            for raw in fact.sentences or split_sentences(fact.text) or [fact.text]:
                # Questions (an article's title) and agent instructions are never said.
                sentence = customer_facing(raw)
                if not sentence or sentence.rstrip().endswith("?"):
                    continue
                if len(_WORDS.findall(sentence)) < 3 and not _DATUM.search(sentence):
                    # "Bluetooth Speaker:" says nothing; "Phone: 1-800-555-0142." does.
                    continue
                self._fact_sentences.append((fact, sentence))
                clauses = [c for c in _PRICED_CLAUSES.split(sentence) if c.strip()]
                if len(clauses) > 1 and sum(bool(_MONEY.search(c)) for c in clauses) > 1:
                    # "Expedited ... $14.95, and overnight ... $29.95": each clause can
                    # answer on its own ("and expedited?").
                    for clause in clauses:
                        text = clause.strip().rstrip(".")
                        self._fact_sentences.append((fact, text[:1].upper() + text[1:] + "."))
        self.previous = {_key(s) for s in split_sentences(self.previous_reply)}
        # The previous reply's sentences that say something: three words, or a datum
        # ("Total: $148.00.").
        self.previous_content = {
            _key(s) for s in split_sentences(self.previous_reply)
            if len(_key(s).split()) >= 3 or _DATUM.search(s)
        }
        self._answers: list[str] | None = None
        text = "\n".join(f.line() for f in self.facts)
        self.fact_text = text
        # An order's number is a claim a reply may make; a product's or article's id is not.
        self.fact_lines = [f.line() if f.kind == "order" else f.text for f in self.facts]
        # What the facts say things *are*; "it can still be cancelled" says what is possible,
        # so it supports no "has been cancelled".
        self.fact_statuses = statuses(_POSSIBILITY.sub(" ", text))
        self.has_order_fact = any(f.kind == "order" for f in self.facts)
        self.order_statuses = statuses(
            _POSSIBILITY.sub(" ", "\n".join(f.text for f in self.facts if f.kind == "order"))
        )
        # What each order in the facts allows, from its status (see facts.eligibility).
        self.allowed: dict[str, frozenset[str]] = {}
        for fact in self.facts:
            status = _ORDER_STATUS.search(fact.text) if fact.kind == "order" else None
            if status:
                self.allowed[fact.id] = allowed_actions(status.group(1))
        self.questions = {_key(s) for f in self.facts for s in _QUESTION.findall(f.text)}
        self.clauses = [c for f in self.facts for c in _CLAUSE_SPLIT.split(f.text) if c.strip()]

    def restated(self, text: str) -> list[str]:
        """The fact sentences ``text`` most likely restates (shared words; the best and
        those close to it), or [] when it shares nothing with the facts."""
        if not self._fact_sentences:
            return []
        scores = sentence_scores([s for _, s in self._fact_sentences], text)
        top = max(scores)
        if top <= 0:
            return []
        return [s for (_, s), x in zip(self._fact_sentences, scores, strict=True) if x >= 0.6 * top]

    def restates(self, said: str, fact_sentence: str) -> bool:
        """Whether reply sentence ``said`` says what ``fact_sentence`` says (it is its
        closest fact sentence, or shares most of its words)."""
        if _key(said) == _key(fact_sentence.rstrip(".")):
            return True
        if not statuses(fact_sentence) <= statuses(said):
            return False  # "Yellow: $159.00." does not say "in stock"
        if not _money(fact_sentence) <= _money(said):
            return False
        if not _long_numbers(fact_sentence) <= _long_numbers(said):
            return False  # "Order #W1 is cancelled." does not give "tracking 883468116659"
        if _numbers(fact_sentence) <= _numbers(said) and _part_of(said, fact_sentence):
            return True  # "2-3 business days for $14.95." of "Expedited takes 2-3 ..."
        mine, theirs = _stems(said), _stems(fact_sentence)
        return bool(theirs) and len(mine & theirs) >= 0.5 * len(theirs)

    def answer_sentences(self) -> list[str]:
        """The fact sentences that best answer the question, best first (the code's own
        answer, used to replace a failed sentence)."""
        if not self._fact_sentences:
            return []
        sentences = [s for _, s in self._fact_sentences]
        # The order number names the order, not what is asked about it.
        question = _ASKING.sub(" ", _ORDER_CODE.sub(" ", self.question))
        if self._answers is not None:
            return self._answers
        # ("and #W6310710?" has no words to mean anything: code's order of facts decides.)
        embedder = self.embedder if _stems(question) - _QUESTION_WORDS else None
        scores = sentence_scores(sentences, question, embedder)
        # The first fact leads: code ranked it first for this question.
        # Ties: the sentence with less beside the answer (a clause before its whole
        # sentence), then the earlier one (code put the most relevant fact first).
        wanted = _stems(question)
        first = self._fact_sentences[0][0]
        # The first fact is the one code chose for this question (the order asked about).
        lead = [0.5 if fact is first else 0.0 for fact, _ in self._fact_sentences]
        # (Shorter only breaks ties of sentences that share words with the question; with
        # no topic words, "and #W6310710?", the order code put them in wins.)
        order = sorted(
            range(len(sentences)),
            key=lambda i: (
                -round(scores[i] + lead[i], 6),
                len(_stems(sentences[i]) - wanted) if scores[i] > 0 else 0,
                i,
            ),
        )
        self._answers = [sentences[i] for i in order]
        return self._answers


def statuses(text: str) -> set[str]:
    """The canonical status claims ``text`` makes."""
    found: set[str] = set()
    rest = text
    for pattern, name in _STATUS:
        if pattern.search(rest):
            found.add(name)
            # "out of stock" must not also count as "in stock".
            rest = pattern.sub(" ", rest)
    return found


def _inverts(text: str, fact_sentence: str) -> bool:
    """Whether ``text`` says the opposite of ``fact_sentence``: a "not" the fact lacks, or
    the fact's negated clause said without its "not" ("Order #W1 is processed." only
    restates the part of "Order #W1 is processed, so it can no longer be cancelled" that
    has no "not": that is not an inversion; "you can cancel it" is)."""
    mine, theirs = negated(text), negated(fact_sentence)
    if mine == theirs:
        return False
    if mine:
        return True
    clauses = [c for c in re.split(r"[,;:]\s+|\s+-\s+", fact_sentence) if negated(c)]
    negated_words = set().union(*(_stems(c) for c in clauses)) if clauses else _stems(
        fact_sentence
    )
    return bool(_stems(text) & negated_words - _POLARITY_NEUTRAL)


_POLARITY_NEUTRAL = {"order", "longer", "status"}


def negated(text: str) -> bool:
    if _LEADING_YES.search(text):
        return bool(_NEGATION.search(_LEADING_YES.sub("", text)))
    return bool(_LEADING_NO.search(text) or _NEGATION.search(text))


def _stems(text: str) -> set[str]:
    return {w[:6] for w in _WORDS.findall(text.lower()) if len(w) > 3 and w not in _GENERIC}


def check_sentence(sentence: str, ctx: ClaimContext) -> Verdict:
    """Whether one reply sentence is supported by the facts (see the module docstring)."""
    text = sentence.strip()
    if not text:
        return Verdict(True)
    if find_unsupported(text, ctx.fact_lines):
        return Verdict(False, "number")
    if AGENT_TEXT.search(text) or _META.search(text):
        return Verdict(False, "agent_text")
    if text.endswith("?") and _key(text) in ctx.questions:
        # A question copied from the facts (an article's title) is not an answer.
        return Verdict(False, "question")
    if ctx.grounded and REFUSAL.search(text):
        return Verdict(False, "refusal")
    claimed = statuses(_POSSIBILITY.sub(" ", text))
    # A status said of an order must be that order's (not a policy's "status will be
    # changed to 'cancelled'").
    support = (
        ctx.order_statuses
        if ctx.has_order_fact and _ABOUT_AN_ORDER.search(text)
        else ctx.fact_statuses
    )
    if claimed - support:
        return Verdict(False, "status")
    if (
        claimed
        and _ABOUT_AN_ORDER.search(text)
        and not ctx.has_order_fact
        and (
            claimed
            & {
                "delivered",
                "refunded",
                "cancelled",
                "shipped",
                "returned",
                "processed",
                "in transit",
                "out for delivery",
                "exchanged",
            }
        )
    ):
        # "Your order has shipped" with no order in the facts: a status nobody looked up.
        return Verdict(False, "status")
    if _echoes_the_question(text, ctx):
        return Verdict(False, "echo")
    if not _eligibility_agrees(text, ctx):
        return Verdict(False, "eligibility")
    restated = ctx.restated(text)
    if restated and all(_inverts(text, s) for s in restated):
        return Verdict(False, "polarity")
    if _BARE_YES.match(text) and _YES_NO_QUESTION.search(ctx.question):
        # "Sure!" to "can I get overnight shipping to Hawaii?" reads as a yes; when the
        # answer is no ("Overnight shipping is not available") or depends on a condition
        # ("Items must be unused", "only if its status is 'pending'") it is a wrong one.
        answers = ctx.answer_sentences()
        if answers and (negated(answers[0]) or _CONDITION.search(answers[0])):
            return Verdict(False, "polarity")
    if not _faithful_copy(text, ctx):
        return Verdict(False, "copy")
    if not _roles_agree(text, ctx):
        return Verdict(False, "role")
    if not _values_belong(text, ctx) or not _options_match(text, ctx):
        return Verdict(False, "product")
    return Verdict(True)


def _echoes_the_question(text: str, ctx: ClaimContext) -> bool:
    """A sentence made only of the question's words ("The Ridgeline rain jacket machine
    washable.") answers nothing."""
    if any(ch.isdigit() for ch in text) or statuses(text):
        return False  # a number or a status is an answer, even in the question's words
    mine = _stems(text) - _FILLER_STEMS
    if len(mine) < 2:
        return False
    return mine <= _stems(ctx.question)


# Words that ask without saying about what ("what about #NW10772?").
_QUESTION_WORDS = {
    "what", "about", "which", "when", "where", "does", "that", "this", "with", "from",
    "have", "will", "would", "could", "should", "there", "then", "also", "okay", "right",
}
_FILLER_STEMS = {"sure", "happy", "help", "thank", "thanks", "great", "question", "good"}


def _faithful_copy(text: str, ctx: ClaimContext) -> bool:
    """A sentence that copies a fact sentence copies its words ("lithium power bars" for
    the facts' "power banks" is a new claim in a copied sentence)."""
    mine = {w for w in _WORDS.findall(text.lower()) if len(w) > 3}
    if len(mine) < 10:
        return True  # a short sentence rephrases rather than copies
    facts = {w for w in _WORDS.findall(ctx.fact_text.lower())}
    for sentence in ctx.restated(text):
        theirs = {w for w in _WORDS.findall(sentence.lower()) if len(w) > 3}
        if len(mine & theirs) >= 0.8 * len(mine):
            # the facts' words, allowing plural/singular and "'s"
            new = {w for w in mine - facts if w.rstrip("s") not in facts and w + "s" not in facts}
            return not new
    return True


def _eligibility_agrees(text: str, ctx: ClaimContext) -> bool:
    """ "It can be returned" only for an order whose status allows a return (and "it
    can't be cancelled" only for one that does not allow it)."""
    if not ctx.allowed:
        return True
    allowed = set().union(*ctx.allowed.values())
    for match in _POSSIBLE.finditer(text):
        verb = match.group("verb") or match.group("verb2")
        action = next(a for k, a in _ACTION_WORDS if re.match(k, verb, re.I))
        denied = bool(_NEGATION.search(match.group(0)))
        if not denied and action not in allowed:
            return False
        if denied and action in allowed:
            return False
    return True


_ACTION_WORDS = (
    (r"return", "return"),
    (r"exchang", "exchange"),
    (r"cancel", "cancel"),
    (r"(chang|modif|edit|updat)", "change"),
)
# "can be returned", "you can return", "is eligible for a return", "can still cancel".
_POSSIBLE = re.compile(
    r"\b(?:can|could|may|able to|eligible (?:for|to))(?:\s+(?:not|no longer|still|now|"
    r"also|be|you|i|we|it|n't))*\s+(?:an?\s+)?"
    r"(?P<verb>return\w*|exchang\w*|cancel\w*|chang\w*|modif\w*|edit\w*|updat\w*)"
    r"|\bcan(?:'t|not)\s+(?:be\s+)?(?P<verb2>return\w*|exchang\w*|cancel\w*|chang\w*)",
    re.IGNORECASE,
)
_ORDER_STATUS = re.compile(r"status: ([^;]+)")
_QUESTION = re.compile(r"[A-Z][^.!?]*\?")


def _roles_agree(text: str, ctx: ClaimContext) -> bool:
    """Each price in ``text`` shares its clause's distinctive words with the fact clause
    that holds that price (no "expedited" next to overnight's price)."""
    priced = [c for c in ctx.clauses if _MONEY.search(c)]
    if len(priced) < 2:
        return True
    spread: Counter[str] = Counter()
    for clause in priced:
        spread.update(_stems(clause))
    for clause in _CLAUSE_SPLIT.split(text):
        amounts = {_amount(m) for m in _MONEY.findall(clause)}
        if not amounts:
            continue
        words = {w for w in _stems(clause) if spread[w] == 1}
        for amount in amounts:
            holders = [c for c in priced if amount in {_amount(m) for m in _MONEY.findall(c)}]
            if not holders:
                continue
            holder_words = set().union(*(_stems(c) for c in holders))
            # A word found in exactly one priced clause, and that clause is another one.
            if any(w not in holder_words for w in words):
                return False
    return True


def _money(text: str) -> set[str]:
    return {_amount(m) for m in _MONEY.findall(text)}


def _amount(raw: str) -> str:
    numbers = extract_claims(raw).numbers
    return min(numbers, key=len) if numbers else raw


def _values_belong(text: str, ctx: ClaimContext) -> bool:
    """Capitalised option values ("Storm Blue") beside a named product are its own."""
    products = [f for f in ctx.facts if f.kind == "product"]
    if not products:
        return True
    named = [f for f in products if _title_named(f, text)]
    if not named:
        return True
    allowed = " ".join(f.text + " " + f.title for f in named).lower()
    for match in _CAPITALISED.finditer(text):
        value = match.group(1)
        if value in _NOT_VALUES or value.split()[0] in _NOT_VALUES:
            continue
        if value.lower() not in allowed and value.lower() in ctx.fact_text.lower():
            # A value the facts have, but on another product's line.
            return False
    return True


_OPTION_LINE = re.compile(r"\b(colou?r|size)s? options?:\s*([^.;]+)", re.IGNORECASE)
_ASKS_OPTION = (
    ("color", re.compile(r"\bcolou?rs?\b", re.I)),
    ("size", re.compile(r"\bsizes?\b", re.I)),
)


def _options_match(text: str, ctx: ClaimContext) -> bool:
    """Sizes are not given as the answer to "what colours?" (nor colours for sizes)."""
    lines: dict[str, set[str]] = {}
    for fact in ctx.facts:
        for kind, values in _OPTION_LINE.findall(fact.text):
            key = "color" if kind.lower().startswith("colo") else "size"
            lines.setdefault(key, set()).update(
                v.strip().lower() for v in values.split(",") if len(v.strip()) > 1
            )
    if len(lines) < 2:
        return True
    lowered = text.lower()
    listed = {k for k, values in lines.items() if sum(v in lowered for v in values) >= 2}
    if len(listed) != 1:
        return True
    named = {k for k, p in _ASKS_OPTION if p.search(text)} or {
        k for k, p in _ASKS_OPTION if p.search(ctx.question)
    }
    return not named or bool(named & listed)


def _title_named(fact: Fact, text: str) -> bool:
    title_words = {w for w in _WORDS.findall((fact.title or fact.id).lower()) if len(w) > 3}
    found = {w for w in _WORDS.findall(text.lower())}
    distinctive = title_words - {"men's", "women's", "kids'", "jacket", "pants", "shirt"}
    return bool(distinctive) and distinctive <= found


class SentenceGuard:
    """Holds a streamed reply back one sentence at a time and releases checked sentences.

    ``feed(piece)`` returns the text safe to show now; ``finish()`` the rest. ``fired``
    counts failed sentences, ``reasons`` counts them by check, ``text`` is everything
    released.
    """

    def __init__(self, ctx: ClaimContext) -> None:
        self.ctx = ctx
        self._buffer = ""
        self.text = ""
        self.fired = 0
        self.reasons: Counter[str] = Counter()
        self.removed: list[str] = []
        self._said: set[str] = set()
        # Sentences of the previous reply, held until something new is said.
        self._held: list[str] = []

    def feed(self, piece: str) -> str:
        self._buffer += piece
        out = ""
        while True:
            match = _END.search(self._buffer)
            if match is None:
                return out
            sentence, self._buffer = self._buffer[: match.end()], self._buffer[match.end() :]
            out += self._release(sentence)

    def finish(self) -> str:
        rest, self._buffer = self._buffer, ""
        out = self._release(rest)
        out += self._ensure_answer()
        if self._held and not self._repeats_everything():
            # Part of the last reply, for another question: that is an answer, not a repeat.
            out += self._emit("")
        if self._held:
            # The whole last reply again: answer with a sentence that is new if there is
            # one, else say it again, marked as such.
            fresh = self._replacement(avoid_previous=True)
            if fresh:
                self.reasons["repeat"] += 1
                self.fired += 1
                self._held = []
                out += self._emit(fresh)
            else:
                held, self._held = self._held, []
                out += self._emit("As I mentioned, " + _lower_first(" ".join(held)))
            self._held = []
        return out

    def _repeats_everything(self) -> bool:
        """Whether the held sentences are the whole previous reply (its sentences that say
        something) and nothing new was said beside them."""
        said_new = any(len(_stems(s)) >= 2 for s in split_sentences(self.text))
        return not said_new and self.ctx.previous_content <= {_key(s) for s in self._held}

    def _ensure_answer(self) -> str:
        """Add the code's best answer sentence when no sentence said restates it, so the
        answer never hangs on which sentence a model's rounding picked (held sentences
        of the previous reply are not counted as said)."""
        answers = self.ctx.answer_sentences()
        if not self.ctx.grounded or not answers or not self.text.strip():
            return ""
        best = answers[0]
        if _key(best) in self._said or _key(best) in {_key(s) for s in self._held}:
            return ""
        said_all = [*split_sentences(self.text), self.text]
        if any(self.ctx.restates(said, best) for said in said_all):
            return ""  # said, in one sentence or across several
        if not best.rstrip().endswith((".", "!", "?")):
            best += "."
        for said in split_sentences(self.text):
            # "Order #W1 is processed." said: add only "So it can no longer be ...".
            core = said.strip().rstrip(".!?")
            if core and best.startswith(core) and len(best) > len(core) + 2:
                best = best[len(core) :].lstrip(" ,;:")
                best = best[:1].upper() + best[1:]
                break
        self.reasons["incomplete"] += 1
        return self._emit(best)

    def _answered(self) -> bool:
        answers = self.ctx.answer_sentences()
        if not answers or not self.text.strip():
            return False
        best = answers[0]
        return _key(best) in self._said or any(
            self.ctx.restates(said, best) for said in [*split_sentences(self.text), self.text]
        )

    def fallback(self) -> str:
        """The code's own answer (its best sentence), for a reply with nothing usable."""
        return self._replacement(avoid_previous=bool(self.ctx.previous))

    def _release(self, sentence: str) -> str:
        # "[product 9832717871] Tea Kettle ..." : a fact's label copied by the model
        sentence = _LABEL.sub("", sentence)
        if not sentence.strip():
            return ""
        verdict = check_sentence(sentence, self.ctx)
        if not verdict.ok:
            self.fired += 1
            self.reasons[verdict.reason] += 1
            self.removed.append(sentence.strip())
            if self._answered():
                return ""  # the answer is said: a failed sentence is only dropped
            sentence = self._replacement()
            if not sentence:
                return ""
        key = _key(sentence)
        if self._said_already(sentence) or key in {_key(s) for s in self._held}:
            return ""
        if key in self.ctx.previous and (len(_stems(sentence)) >= 2 or _DATUM.search(sentence)):
            # ("Sure!" is no repeat: only sentences that say something are held, "Total:
            # $148.00." among them)
            self._held.append(sentence.strip())
            return ""
        return self._emit(sentence)

    def _said_already(self, sentence: str) -> bool:
        """Whether this reply said the sentence already, alone or inside a longer one ("Items
        must be unused: a, b and c." holds "A, b and c.", a replacement the model then
        writes out again). Containment compares numbers too: "$5" is not "$15"."""
        if _key(sentence) in self._said:
            return True
        return any(_part_of(sentence, said) for said in split_sentences(self.text))

    @staticmethod
    def _unsaid_part(sentence: str, text: str) -> str:
        """``sentence`` without its clauses this reply said already: "Overnight shipping is
        not available, and expedited shipping takes 3-5 business days." after "Expedited
        shipping takes 3-5 business days." is "Overnight shipping is not available." ("" when
        every clause was said.) ``text``: what the reply said so far."""
        said = split_sentences(text)
        if not any(_part_of(s, sentence) for s in said):
            return sentence
        clauses = [c.strip().rstrip(" ,;.!?") for c in _CLAUSE_SPLIT.split(sentence.strip())]
        new = [c for c in clauses if c and not any(_part_of(c, s) for s in said)]
        if len(new) == len([c for c in clauses if c]):
            return sentence  # said inside a clause, not as one: keep the sentence whole
        if not new:
            return ""
        text = ", ".join(new)
        return text[:1].upper() + text[1:] + "."

    def _emit(self, sentence: str) -> str:
        parts = [*self._held, sentence.strip()]
        self._held = []
        out = ""
        for part in parts:
            part = self._unsaid_part(part, self.text + out)
            if not part or _key(part) in self._said:
                continue
            self._said.add(_key(part))
            out += (" " if self.text or out else "") + part
        self.text += out
        return out

    def _replacement(self, *, avoid_previous: bool = False) -> str:
        """The best answer sentence not yet said, or nothing (the sentence is dropped)."""
        for sentence in self.ctx.answer_sentences():
            key = _key(sentence)
            if key in self._said or (avoid_previous and key in self.ctx.previous):
                continue
            return sentence if sentence.rstrip().endswith((".", "!", "?")) else sentence + "."
        return ""


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


# A sentence this long that a said sentence holds word for word is said already.
_CONTAINED_MIN_WORDS = 5


def _part_of(sentence: str, other: str) -> bool:
    """Whether ``other`` holds ``sentence``'s words in order (at least five of them)."""
    words = _full_key(sentence)
    return len(words.split()) >= _CONTAINED_MIN_WORDS and f" {words} " in f" {_full_key(other)} "


def _numbers(text: str) -> set[str]:
    return set(_NUMBER.findall(text))


def _long_numbers(text: str) -> set[str]:
    """Tracking numbers, phone numbers, order numbers: what a sentence exists to give."""
    return set(_LONG_NUMBER.findall(text))


_NUMBER = re.compile(r"\d+(?:[.,:-]\d+)*")
_LONG_NUMBER = re.compile(r"\d{6,}")


def _full_key(sentence: str) -> str:
    return " ".join(_ALL_WORDS.findall(sentence.lower()))


_ALL_WORDS = re.compile(r"[a-z0-9$#%][a-z0-9$#%'.,-]*[a-z0-9%]|[a-z0-9]")


def _key(sentence: str) -> str:
    return " ".join(_WORDS.findall(sentence.lower()))
