"""The answering pipeline: route, fetch facts, prompt, stream through the guard, cite.

``Pipeline.answer`` implements :class:`chatbot.types.Answerer`. Code decides everything
that must be right every time (whose orders may be read, when to ask for verification,
when to hand off); the model only turns a few fact lines into a sentence or two, and
the grounding guard removes any number it made up.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from chatbot.answering import replies
from chatbot.answering.facts import (
    Fact,
    facts_used,
    hit_fact,
    order_fact,
    order_summary_fact,
)
from chatbot.answering.guard import StreamGuard
from chatbot.answering.prompt import build_prompt_ids
from chatbot.answering.router import Intent, Route, route, strip_emails
from chatbot.types import AnswerRequest, ReplyDone, ReplyEvent, ReplyToken, Source
from knowledge_base import orders as order_queries

if TYPE_CHECKING:
    from chatbot.settings import Settings
    from chatbot.storage.db import Database
    from knowledge_base.models import Order
    from knowledge_base.retrieval import Hit, Retriever

log = logging.getLogger(__name__)

# Facts from retrieval given to the model at most (best first).
MAX_HIT_FACTS = 3
# A hit joins the prompt only if it scores at least this share of the best hit's score.
HIT_SCORE_RATIO = 0.85
# Orders listed when the shopper's question could mean several of them.
MAX_LISTED_ORDERS = 5
# The chat template's end-of-turn marker: generation stops there.
STOP = ("<|im_end|>", "<|endoftext|>")


class EngineLike(Protocol):
    """What the pipeline needs from :class:`chatbot.engine.engine.Engine`."""

    tokenizer: Any

    def stream(self, request: Any) -> AsyncIterator[str]: ...


@dataclass
class Plan:
    """What to say: either facts for the model, or a fixed reply."""

    facts: list[Fact] = field(default_factory=list)
    fixed: str | None = None
    handoff: bool = False
    reason: str = "grounded"
    sources: list[Source] = field(default_factory=list)
    verified: frozenset[str] = frozenset()
    # The message as the model should see it (e.g. without the email a guest sent).
    message: str | None = None


@dataclass
class PipelineStats:
    """Counters for /metrics and the eval report (per Pipeline instance)."""

    replies: int = 0
    generated: int = 0
    guard_fired: int = 0
    replies_guarded: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


class Pipeline:
    """Answers one shopper message at a time; safe to share across conversations."""

    def __init__(
        self,
        db: Database,
        retriever: Retriever | None,
        engine: EngineLike,
        settings: Settings,
    ) -> None:
        self.db = db
        self.retriever = retriever
        self.engine = engine
        self.settings = settings
        self.stats = PipelineStats()
        self._synced: set[int] = set()
        self._sync_lock = threading.Lock()

    def prepare(self, store_id: int, *, progress: bool = False) -> None:
        """Bring the store's search index up to date now instead of on its first question."""
        if self.retriever is None:
            return
        with self._sync_lock:
            self.retriever.sync(store_id, progress=progress)
            self._synced.add(store_id)

    async def start(self) -> None:
        """Start the engine (its batching loop), when it has one."""
        start = getattr(self.engine, "start", None)
        if start is not None:
            await start()

    async def close(self) -> None:
        """Stop the engine; pending replies are cancelled by the engine."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            await close()

    async def answer(self, request: AnswerRequest) -> AsyncIterator[ReplyEvent]:
        """Yield the reply as ``ReplyToken`` pieces, then one ``ReplyDone``."""
        decision = route(request.message, request.history)
        plan = await asyncio.to_thread(self.plan, request, decision)
        log.debug("route %s -> %s (%d facts)", decision.intent, plan.reason, len(plan.facts))
        if plan.fixed is not None:
            events = self._fixed(plan.fixed, plan)
        else:
            events = self._generate(request, plan)
        try:
            async for event in events:
                if isinstance(event, ReplyDone):
                    self.stats.replies += 1
                    self.stats.reasons[event.reason] += 1
                yield event
        finally:
            # Closing this stream (the shopper left) closes the engine's stream now,
            # not whenever the garbage collector gets to it.
            await events.aclose()

    # -- deciding what to say (sync: database and retrieval) ---------------------------

    def plan(self, request: AnswerRequest, decision: Route) -> Plan:
        """Pick facts or a fixed reply for ``request`` (runs in a worker thread)."""
        intent = decision.intent
        if intent is Intent.INJECTION:
            return Plan(fixed=replies.REFUSED, reason="refused")
        if intent is Intent.HANDOFF:
            return Plan(fixed=replies.HANDOFF, handoff=True, reason="asked_human")
        if intent is Intent.SMALL_TALK:
            return Plan(fixed=replies.small_talk(request.message), reason="small_talk")
        if intent is Intent.OUT_OF_SCOPE:
            return Plan(fixed=replies.OUT_OF_SCOPE, reason="out_of_scope")
        if intent is Intent.ORDER:
            return self._plan_order(request, decision)
        query = _query(request)
        hits = self._search(request.store_id, query)
        if not hits:
            return Plan(fixed=replies.NO_MATCH, handoff=True, reason="no_match")
        # Only hits close to the best one: every extra line is one more thing for a
        # small model to copy from by mistake.
        close = [h for h in hits if h.score >= hits[0].score * HIT_SCORE_RATIO]
        embedder = self._embedder()
        facts = [
            hit_fact(h, query, 2 if i == 0 else 1, embedder=embedder)
            for i, h in enumerate(close)
        ]
        return Plan(facts=facts[:MAX_HIT_FACTS])

    def _plan_order(self, request: AnswerRequest, decision: Route) -> Plan:
        with self.db.sessions() as session:
            if request.customer_id is not None:
                plan = self._customer_plan(session, request, decision)
            else:
                plan = self._guest_plan(session, request, decision)
        if plan.facts and plan.fixed is None and {"returns", "cancel"} & set(decision.topics):
            # Return and cancel questions need the store's rule next to the order's status.
            hits = self._search(request.store_id, request.message)[:1]
            embedder = self._embedder()
            plan.facts += [hit_fact(h, request.message, 1, embedder=embedder) for h in hits]
        if decision.email:
            # The model needs the question, not the shopper's email address.
            plan.message = strip_emails(request.message)
        return plan

    def _customer_plan(self, session: Any, request: AnswerRequest, decision: Route) -> Plan:
        assert request.customer_id is not None
        store_id, customer_id = request.store_id, request.customer_id
        if decision.order_numbers:
            found = [
                order_queries.order_for_customer(session, store_id, customer_id, number)
                for number in decision.order_numbers[:2]
            ]
            if any(order is None for order in found):
                return Plan(fixed=replies.NOT_YOUR_ORDER, handoff=True, reason="order_not_found")
            return _order_facts([o for o in found if o is not None], decision.topics)
        orders = order_queries.customer_orders(session, store_id, customer_id)
        if not orders:
            return Plan(fixed=replies.NO_ORDERS, handoff=True, reason="no_orders")
        return _pick_orders(orders, request.message, decision.topics)

    def _guest_plan(self, session: Any, request: AnswerRequest, decision: Route) -> Plan:
        store_id = request.store_id
        proven = {n.upper() for n in request.verified_orders}
        numbers = decision.order_numbers
        if numbers and all(n.upper() in proven for n in numbers):
            orders = order_queries.verified_guest_orders(session, store_id, numbers)
            return _order_facts(orders, decision.topics)
        if numbers and decision.email:
            order = order_queries.verify_guest_order(session, store_id, numbers[0], decision.email)
            if order is None:
                return Plan(fixed=replies.VERIFY_FAILED, handoff=True, reason="verify_failed")
            plan = _order_facts([order], decision.topics)
            plan.verified = frozenset({order.number})
            return plan
        if numbers:
            return Plan(fixed=replies.VERIFY_NEED_EMAIL, reason="verify_needed")
        if proven:
            orders = order_queries.verified_guest_orders(session, store_id, sorted(proven))
            if orders:
                return _pick_orders(orders, request.message, decision.topics)
        if decision.email:
            return Plan(fixed=replies.VERIFY_NEED_NUMBER, reason="verify_needed")
        return Plan(fixed=replies.VERIFY_REQUEST, reason="verify_needed")

    def _search(self, store_id: int, query: str) -> list[Hit]:
        """Retrieval hits at or above ``retrieval_min_score``; syncs the index on first use."""
        if self.retriever is None or not query.strip():
            return []
        self._ensure_synced(store_id)
        hits = self.retriever.search(store_id, query, k=self.settings.retrieval_k)
        return [h for h in hits if h.score >= self.settings.retrieval_min_score]

    def _embedder(self) -> Any:
        """The retriever's sentence embedder (ranks an article's sentences), if it has one."""
        return getattr(self.retriever, "embedder", None)

    def _ensure_synced(self, store_id: int) -> None:
        if store_id in self._synced or self.retriever is None:
            return
        with self._sync_lock:
            if store_id not in self._synced:
                self.retriever.sync(store_id)
                self._synced.add(store_id)

    # -- saying it (async: streaming) -------------------------------------------------

    async def _fixed(self, text: str, plan: Plan) -> AsyncGenerator[ReplyEvent, None]:
        for piece in _words(text):
            yield ReplyToken(piece)
        yield ReplyDone(
            text=text,
            sources=list(plan.sources),
            handoff=plan.handoff,
            verified_orders=plan.verified,
            reason=plan.reason,
        )

    async def _generate(
        self, request: AnswerRequest, plan: Plan
    ) -> AsyncGenerator[ReplyEvent, None]:
        from chatbot.engine.engine import GenerationRequest

        message = plan.message or request.message
        prompt_ids, kept = build_prompt_ids(
            self.engine.tokenizer, plan.facts, message, request.history
        )
        generation = GenerationRequest(
            prompt_ids=prompt_ids,
            max_new_tokens=self.settings.max_new_tokens,
            temperature=0.0,
            seed=request.seed,
            stop=STOP,
            cache_key=request.conversation_key,
        )
        guard = StreamGuard(fact.line() for fact in kept)
        pieces = self.engine.stream(generation)
        try:
            async for piece in pieces:
                safe = guard.feed(piece)
                if safe:
                    yield ReplyToken(safe)
        finally:
            # Stop generating at once when the shopper goes away mid-reply.
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()
        tail = guard.finish()
        if tail:
            yield ReplyToken(tail)
        self.stats.generated += 1
        if guard.fired:
            self.stats.guard_fired += guard.fired
            self.stats.replies_guarded += 1
            log.debug("grounding guard removed %d claim(s): %s", guard.fired, guard.removed)
        text = guard.text.strip()
        if not _has_content(text):
            # Nothing usable came out: restate the best fact rather than send an empty reply.
            fallback = replies.fact_summary(kept[0])
            prefix = " " if guard.text else ""
            for piece in _words(prefix + fallback):
                yield ReplyToken(piece)
            text = (guard.text + prefix + fallback).strip()
        used = facts_used(text, kept) or kept[:1]
        yield ReplyDone(
            text=text,
            sources=[fact.source() for fact in used],
            verified_orders=plan.verified,
            guard_fired=guard.fired,
            reason=plan.reason,
        )


def _order_facts(orders: Sequence[Order], topics: Iterable[str]) -> Plan:
    return Plan(facts=[order_fact(order, topics) for order in orders])


_WORD = re.compile(r"[a-z]+")


def _stem(word: str) -> str:
    return word[:-1] if word.endswith("s") and len(word) > 3 else word


def _pick_orders(orders: Sequence[Order], message: str, topics: Sequence[str]) -> Plan:
    """The order(s) a question without an order number most likely means.

    One order: that one. Several: those whose items the message names ("return the
    shoes"), else those in a state the topic fits (tracking -> not yet delivered,
    returns -> delivered). Still several: list them and ask which one.
    """
    if len(orders) == 1:
        return _order_facts(orders, topics)
    words = {_stem(w) for w in _WORD.findall(message.lower()) if len(w) > 2}
    named = [
        o
        for o in orders
        if any(_stem(w) in words for i in o.items for w in _WORD.findall(i.name.lower()))
    ]
    candidates = named or _by_topic(orders, topics) or list(orders)
    if len(candidates) == 1:
        return _order_facts(candidates, topics)
    listed = [order_summary_fact(o) for o in candidates[:MAX_LISTED_ORDERS]]
    return Plan(
        fixed=replies.choose_order(listed),
        sources=[fact.source() for fact in listed],
        reason="choose_order",
    )


def _item_words(order: Order) -> set[str]:
    return {
        _stem(w) for item in order.items for w in _WORD.findall(item.name.lower()) if len(w) > 2
    }


def _by_topic(orders: Sequence[Order], topics: Sequence[str]) -> list[Order]:
    if "returns" in topics:
        return [o for o in orders if o.status.lower().startswith("delivered")]
    if "tracking" in topics:
        done = ("delivered", "cancelled", "returned")
        return [o for o in orders if not o.status.lower().startswith(done)]
    return []


def _query(request: AnswerRequest) -> str:
    """The retrieval query: the message, plus the previous shopper turn for short follow-ups."""
    message = request.message.strip()
    if len(message.split()) >= 5:
        return message
    earlier = [t.text for t in request.history if t.role == "shopper" and t.text.strip() != message]
    return f"{earlier[-1]} {message}" if earlier else message


def _has_content(text: str) -> bool:
    return len(_WORD.findall(text.lower())) >= 2


def _words(text: str) -> list[str]:
    """Split a fixed reply into word-sized pieces (each keeps its leading whitespace)."""
    return re.findall(r"\s*\S+", text)


async def collect(events: AsyncIterator[ReplyEvent]) -> ReplyDone:
    """Run a reply stream to completion and return its ``ReplyDone`` (for eval and tests)."""
    done: ReplyDone | None = None
    async for event in events:
        if isinstance(event, ReplyDone):
            done = event
    if done is None:
        raise RuntimeError("reply stream ended without ReplyDone")
    return done


def build_answerer(settings: Settings, db: Database) -> Pipeline:
    """The real pipeline: MiniLM retriever over ``settings.index_dir`` and the LM engine."""
    from chatbot.engine.engine import Engine
    from knowledge_base.retrieval import Retriever

    retriever = Retriever(db, settings.index_dir)
    engine = Engine.load(settings)
    return Pipeline(db, retriever, engine, settings)
