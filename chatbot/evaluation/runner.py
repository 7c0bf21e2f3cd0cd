"""Run eval questions through each system and score every reply.

Systems:

- ``base``: the full answering pipeline with the base model (no adapter);
- ``adapter``: the same pipeline with the LoRA adapter merged in;
- ``retrieval``: no language model and no order lookups: the best retrieval snippet,
  verbatim (or the pipeline's "no information" reply when nothing scores high enough),
  i.e. a classic FAQ search bot;
- ``facts``: no language model: the pipeline's own plan (router, scoped order lookup,
  retrieval) with its fixed replies, else the first fact line verbatim. An upper bound
  for copying, useful to see what the model adds or loses.

Every reply is scored against the evidence the system had (the fact lines that made it
into the prompt, the shopper's message, or the code-written fixed reply).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from chatbot.answering import replies as fixed_replies
from chatbot.answering.prompt import build_prompt_ids
from chatbot.answering.router import route
from chatbot.evaluation.metrics import (
    Secrets,
    fact_hits,
    is_handoff,
    leaks,
    unsupported_claims,
    word_count,
)
from chatbot.evaluation.questions import EvalQuestion
from chatbot.types import AnswerRequest, ReplyDone
from knowledge_base.models import Customer, Order

log = logging.getLogger(__name__)

SYSTEMS = ("base", "adapter", "retrieval", "facts")
LM_SYSTEMS = ("base", "adapter")


@dataclass
class Scored:
    """One reply and its scores."""

    question_id: str
    category: str
    system: str
    reply: str
    facts_found: int
    facts_expected: int
    unsupported: list[str]
    handoff: bool
    leaked: list[str]
    words: int
    guard_fired: int = 0
    reason: str = ""
    seconds: float = 0.0

    @property
    def correct(self) -> bool:
        return self.facts_found == self.facts_expected


@dataclass
class StoreSecrets:
    """Every customer's identifiers, to check a reply against all but the asker's."""

    by_customer: dict[str, Secrets] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    def others(self, asker: str | None) -> Secrets:
        parts = [s for cid, s in self.by_customer.items() if cid != asker]
        return Secrets(
            order_numbers=frozenset().union(*(p.order_numbers for p in parts)),
            tracking_numbers=frozenset().union(*(p.tracking_numbers for p in parts)),
            emails=frozenset().union(*(p.emails for p in parts)),
            addresses=frozenset().union(*(p.addresses for p in parts)),
        )


def load_secrets(db: Any, store_id: int) -> StoreSecrets:
    with db.session() as session:
        customers = session.scalars(
            select(Customer).where(Customer.store_id == store_id)
            .options(selectinload(Customer.orders).selectinload(Order.shipments))
        ).all()
        out = StoreSecrets()
        for c in customers:
            addresses = {c.address.get("address1", "")} | {
                o.shipping_address.get("address1", "") for o in c.orders
            }
            out.by_customer[c.source_id] = Secrets(
                order_numbers=frozenset(o.number for o in c.orders),
                tracking_numbers=frozenset(
                    s.tracking_number for o in c.orders for s in o.shipments if s.tracking_number
                ),
                emails=frozenset({c.email} | {o.email for o in c.orders} - {""}),
                addresses=frozenset(a for a in addresses if a),
            )
            out.ids[c.source_id] = c.id
    return out


def score(
    q: EvalQuestion, system: str, reply: str, evidence: Sequence[str], secrets: StoreSecrets,
    *, flagged_handoff: bool = False, guard_fired: int = 0, reason: str = "",
    seconds: float = 0.0,
) -> Scored:
    found, expected = fact_hits(reply, q.expected)
    others = secrets.others(q.customer)
    return Scored(
        question_id=q.id,
        category=q.category,
        system=system,
        reply=reply,
        facts_found=found,
        facts_expected=expected,
        unsupported=sorted(unsupported_claims(reply, [*evidence, q.message])),
        handoff=is_handoff(reply, flagged_handoff),
        leaked=sorted(leaks(reply, others, allowed=[q.message])),
        words=word_count(reply),
        guard_fired=guard_fired,
        reason=reason,
        seconds=seconds,
    )


def _request(q: EvalQuestion, store_id: int, secrets: StoreSecrets) -> AnswerRequest:
    customer_id = secrets.ids.get(q.customer) if q.customer else None
    return AnswerRequest(store_id=store_id, message=q.message, customer_id=customer_id)


def _evidence(pipeline: Any, request: AnswerRequest) -> tuple[list[str], str | None]:
    """The fact lines the model saw for ``request`` (or the fixed reply the code gave)."""
    plan = pipeline.plan(request, route(request.message, request.history))
    if plan.fixed is not None:
        return [plan.fixed], plan.fixed
    _, kept = build_prompt_ids(
        pipeline.engine.tokenizer, plan.facts, request.message, request.history
    )
    return [f.line() for f in kept], None


async def run_lm(
    pipeline: Any, system: str, questions: Sequence[EvalQuestion], store_id: int,
    secrets: StoreSecrets, *, concurrency: int = 8, progress: bool = True,
) -> list[Scored]:
    """Answer every question with the real pipeline (several at once, so the engine
    batches them) and score the replies."""
    from tqdm import tqdm

    sem = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(questions), desc=f"eval {system}", unit="q", disable=not progress)

    async def one(q: EvalQuestion) -> Scored:
        async with sem:
            request = _request(q, store_id, secrets)
            started = time.monotonic()
            done: ReplyDone | None = None
            async for event in pipeline.answer(request):
                if isinstance(event, ReplyDone):
                    done = event
            assert done is not None
            evidence, _ = await asyncio.to_thread(_evidence, pipeline, request)
            bar.update(1)
            return score(q, system, done.text, evidence, secrets,
                         flagged_handoff=done.handoff, guard_fired=done.guard_fired,
                         reason=done.reason, seconds=time.monotonic() - started)

    await pipeline.start()
    try:
        return list(await asyncio.gather(*(one(q) for q in questions)))
    finally:
        bar.close()
        await pipeline.close()


def run_retrieval(
    retriever: Any, settings: Any, questions: Sequence[EvalQuestion], store_id: int,
    secrets: StoreSecrets,
) -> list[Scored]:
    """The search-only baseline: the best snippet verbatim, or the no-match reply."""
    out = []
    for q in questions:
        hits = [h for h in retriever.search(store_id, q.message, k=1)
                if h.score >= settings.retrieval_min_score]
        if hits:
            reply = " ".join(hits[0].snippet.split())
            out.append(score(q, "retrieval", reply, [reply], secrets, reason="snippet"))
        else:
            reply = fixed_replies.NO_MATCH
            out.append(score(q, "retrieval", reply, [reply], secrets, flagged_handoff=True,
                             reason="no_match"))
    return out


def run_facts(
    pipeline: Any, questions: Sequence[EvalQuestion], store_id: int, secrets: StoreSecrets
) -> list[Scored]:
    """The pipeline's plan without a model: fixed reply, else the first fact line."""
    out = []
    for q in questions:
        request = _request(q, store_id, secrets)
        plan = pipeline.plan(request, route(request.message))
        if plan.fixed is not None:
            out.append(score(q, "facts", plan.fixed, [plan.fixed], secrets,
                             flagged_handoff=plan.handoff, reason=plan.reason))
        else:
            line = plan.facts[0].line()
            out.append(score(q, "facts", line, [line], secrets, reason=plan.reason))
    return out


def make_pipeline(settings: Any, db: Any, system: str, adapter: Path | None) -> Any:
    """A real pipeline for ``system`` ("base": no adapter; "adapter": ``adapter``)."""
    from chatbot.answering.pipeline import Pipeline
    from chatbot.engine.engine import Engine
    from knowledge_base.retrieval import Retriever

    chosen = dataclasses.replace(settings, adapter_path=adapter if system == "adapter" else None)
    engine = Engine.load(chosen)
    return Pipeline(db, Retriever(db, settings.index_dir), engine, chosen)
