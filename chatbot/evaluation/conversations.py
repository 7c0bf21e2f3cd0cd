"""Play multi-turn dialogues through the answering pipeline in-process and score every turn.

Each dialogue (a transcript, ``chatbot/evaluation/dialogues/``) is played the way the chat
server plays a conversation: for every shopper turn one ``AnswerRequest`` with the earlier
turns as ``history``, the signed-in customer, the orders a guest proved in earlier replies
(the union of every ``ReplyDone.verified_orders`` so far) and the dialogue state the
previous reply left (``ReplyDone.state``, passed through untouched). Each reply is checked
with the transcript checks (:func:`chatbot.replay.checks.check_reply`), with
``no_unsupported_claims`` read from the store's database rows (``DatabaseEvidence``).

Per turn this records:

- ``passed``: every expectation of the turn holds;
- ``false_claim``: a failed ``no_unsupported_claims`` (a number, id, price or date no cited
  source backs), or a failed ``not_contains`` / ``not_regex`` (in the dialogue set these
  only list what contradicts the store's data: a wrong status, an injected claim, a wrong
  polarity, words meant for agents);
- ``repeat``: the reply is the previous bot reply again (case and spacing aside) while the
  shopper wrote something different, or the reply says one of its sentences twice (the
  ``no_self_repeat`` check every reply gets);
- ``handoff_ok``: for turns that state ``handoff:``, whether the reply's flag matches.

Systems: ``adapter`` and ``base`` (the full pipeline, with and without the LoRA adapter,
as in :mod:`chatbot.evaluation.runner`) and ``retrieval`` (no model and no order lookups:
the best snippet for the message verbatim, or the no-match reply with a handoff).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbot.replay.checks import Check, DatabaseEvidence, Reply, SourceSeen, check_reply
from chatbot.replay.format import ShopperTurn, Transcript, iter_shopper_turns
from chatbot.types import AnswerRequest, ReplyDone, Turn

FALSE_CLAIM_CHECKS = frozenset({"no_unsupported_claims", "not_contains", "not_regex"})
DIALOGUE_SYSTEMS = ("adapter", "base", "retrieval")
SEED = 0


@dataclass
class TurnScore:
    """One shopper turn of one dialogue, answered by one system, and its checks."""

    dialogue: str
    store: str
    system: str
    turn: int  # 1-based, shopper turns only
    shopper: str
    reply: str
    sources: list[str]
    handoff: bool
    guard_fired: int
    reason: str
    checks: list[dict[str, Any]]
    passed: bool
    false_claim: bool
    repeat: bool
    handoff_expected: bool | None
    seconds: float = 0.0
    error: str = ""
    verified_orders: list[str] = field(default_factory=list)

    @property
    def handoff_ok(self) -> bool | None:
        if self.handoff_expected is None:
            return None
        return self.handoff == self.handoff_expected

    def failed_checks(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["passed"]]


@dataclass
class DialogueScore:
    dialogue: str
    store: str
    system: str
    customer: str | None
    path: str
    turns: list[TurnScore] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.turns)


def _check_row(c: Check) -> dict[str, Any]:
    """A check for the report: what was seen only where it failed (the reply is kept once,
    on the turn)."""
    row: dict[str, Any] = {"name": c.name, "expected": c.expected, "passed": c.passed}
    if not c.passed:
        row["actual"] = c.actual
    return row


def false_claims(checks: Sequence[Check]) -> list[Check]:
    """The failed checks that mean the reply stated something false (see the module doc)."""
    return [c for c in checks if not c.passed and c.name in FALSE_CLAIM_CHECKS]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def is_repeat(reply: str, previous_reply: str | None, message: str,
              previous_message: str | None) -> bool:
    """The same reply as last time although the shopper asked something else."""
    if previous_reply is None or previous_message is None or not reply.strip():
        return False
    return _norm(reply) == _norm(previous_reply) and _norm(message) != _norm(previous_message)


# ---- answering one turn ---------------------------------------------------------------------


@dataclass
class Answered:
    """What a system did with one message (the parts the checks and the report read)."""

    text: str
    sources: list[SourceSeen]
    handoff: bool = False
    guard_fired: int = 0
    reason: str = ""
    verified_orders: frozenset[str] = frozenset()
    state: dict[str, Any] | None = None
    error: str = ""


async def pipeline_answer(answerer: Any, request: AnswerRequest) -> Answered:
    """Run ``request`` through the answering pipeline; an exception becomes an error reply."""
    done: ReplyDone | None = None
    try:
        async for event in answerer.answer(request):
            if isinstance(event, ReplyDone):
                done = event
    except Exception as exc:  # noqa: BLE001 - a crash is a failed turn, not a failed eval
        return Answered("", [], error=f"{type(exc).__name__}: {exc}")
    if done is None:
        return Answered("", [], error="no ReplyDone")
    return Answered(
        text=done.text,
        sources=[SourceSeen(s.kind, s.id, s.title) for s in done.sources],
        handoff=done.handoff,
        guard_fired=done.guard_fired,
        reason=done.reason,
        verified_orders=frozenset(done.verified_orders),
        state=getattr(done, "state", None),
    )


def retrieval_answer(retriever: Any, min_score: float) -> Callable[[AnswerRequest], Any]:
    """The search-only baseline as an answer function (no history, no orders, no model)."""
    from chatbot.answering import replies as fixed_replies

    async def answer(request: AnswerRequest) -> Answered:
        hits = await asyncio.to_thread(
            lambda: retriever.search(request.store_id, request.message, k=1)
        )
        hits = [h for h in hits if h.score >= min_score]
        if not hits:
            return Answered(fixed_replies.NO_MATCH, [], handoff=True, reason="no_match")
        hit = hits[0]
        return Answered(" ".join(hit.snippet.split()), [SourceSeen(hit.kind, hit.id, hit.title)],
                        reason="snippet")

    return answer


# ---- playing a dialogue ---------------------------------------------------------------------


async def play(
    t: Transcript,
    answer: Callable[[AnswerRequest], Any],
    *,
    system: str,
    store_id: int,
    customer_id: int | None,
    evidence: DatabaseEvidence | None,
    key_prefix: str = "eval",
) -> DialogueScore:
    """Play every shopper turn of ``t`` through ``answer`` (a coroutine function taking an
    ``AnswerRequest`` and returning :class:`Answered`), carrying history, proven orders
    and dialogue state like the server does; score each turn."""
    result = DialogueScore(t.name, t.store.name, system, t.customer, str(t.path))
    history: list[Turn] = []
    verified: frozenset[str] = frozenset()
    state: dict[str, Any] | None = None
    shopper_texts: list[str] = []
    previous_reply: str | None = None
    previous_message: str | None = None
    key = f"{key_prefix}:{system}:{t.store.name}:{t.name}"
    for number, (_, step) in enumerate(iter_shopper_turns(t), start=1):
        assert isinstance(step, ShopperTurn)
        request = AnswerRequest(
            store_id=store_id, message=step.text, history=tuple(history),
            customer_id=customer_id, verified_orders=verified, seed=SEED,
            conversation_key=key, state=state,
        )
        started = time.monotonic()
        got: Answered = await answer(request)
        seconds = time.monotonic() - started
        shopper_texts.append(step.text)
        reply = Reply(text=got.text, sources=got.sources, handoff=got.handoff,
                      error=got.error or None)
        checks = await asyncio.to_thread(
            check_reply, step.expect, reply, store=t.store.name, evidence=evidence,
            shopper_texts=list(shopper_texts),
        )
        result.turns.append(TurnScore(
            dialogue=t.name, store=t.store.name, system=system, turn=number,
            shopper=step.text, reply=got.text, sources=[str(s) for s in got.sources],
            handoff=got.handoff, guard_fired=got.guard_fired, reason=got.reason,
            checks=[_check_row(c) for c in checks],
            passed=all(c.passed for c in checks),
            false_claim=bool(false_claims(checks)),
            repeat=is_repeat(got.text, previous_reply, step.text, previous_message)
            or any(c.name == "no_self_repeat" and not c.passed for c in checks),
            handoff_expected=step.expect.handoff, seconds=round(seconds, 2), error=got.error,
            verified_orders=sorted(got.verified_orders),
        ))
        history += [Turn("shopper", step.text), Turn("bot", got.text)]
        verified = verified | got.verified_orders
        state = got.state
        previous_reply, previous_message = got.text, step.text
    return result


async def play_all(
    transcripts: Sequence[Transcript],
    answer: Callable[[AnswerRequest], Any],
    *,
    system: str,
    store_ids: dict[str, int],
    customer_ids: dict[tuple[str, str], int],
    evidence: DatabaseEvidence | None,
    concurrency: int = 4,
    on_done: Callable[[DialogueScore], None] | None = None,
) -> list[DialogueScore]:
    """Every dialogue (``concurrency`` at once, so the engine batches their turns), in
    input order. ``customer_ids`` maps (store, customer source id) to the database id."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(t: Transcript) -> DialogueScore:
        async with gate:
            customer = customer_ids[(t.store.name, t.customer)] if t.customer else None
            scored = await play(t, answer, system=system, store_id=store_ids[t.store.name],
                                customer_id=customer, evidence=evidence)
        if on_done is not None:
            on_done(scored)
        return scored

    return list(await asyncio.gather(*(one(t) for t in transcripts)))


def resolve_customers(db: Any, transcripts: Sequence[Transcript],
                      store_ids: dict[str, int]) -> dict[tuple[str, str], int]:
    """Database ids of the transcripts' signed-in customers (NotFoundError if unknown)."""
    from knowledge_base.orders import find_customer

    out: dict[tuple[str, str], int] = {}
    with db.sessions() as session:
        for t in transcripts:
            if t.customer and (t.store.name, t.customer) not in out:
                found = find_customer(session, store_ids[t.store.name], t.customer)
                out[(t.store.name, t.customer)] = found.id
    return out


# ---- the stores ------------------------------------------------------------------------------


def prepare_store(db: Any, store: str, tau_dir: Path) -> int:
    """The store's id in ``db``: the demo store, or τ-bench retail imported as ``tau``."""
    from chatbot.errors import ConfigError
    from knowledge_base.stores import find_store

    if store == "demo":
        from knowledge_base.demo import ensure_demo_store

        return int(ensure_demo_store(db).id)
    with db.sessions() as session:
        existing = find_store(session, store)
        if existing is not None:
            return int(existing.id)
    if not (tau_dir / "orders.json").is_file():
        raise ConfigError(f"τ-bench retail data not found in {tau_dir} (pass --tau-dir)")
    from knowledge_base.importers import import_path

    import_path(db, "tau-retail", tau_dir, store)
    with db.sessions() as session:
        found = find_store(session, store)
        assert found is not None
        return int(found.id)


@dataclass
class World:
    """A scratch database with the eval stores, for tests and one-off runs."""

    settings: Any
    db: Any
    store_ids: dict[str, int]
    evidence: DatabaseEvidence

    def close(self) -> None:
        self.db.dispose()


def open_world(settings: Any, data_dir: Path, stores: Sequence[str], tau_dir: Path,
               index_cache: Path | None = None) -> World:
    """A fresh SQLite database under ``data_dir`` holding ``stores`` ("demo", "tau"); with
    ``index_cache``, each store's search index lives there (keyed by store name), so only
    the first run embeds it, as ``chatbot replay`` does."""
    from chatbot.storage.db import Database

    data_dir.mkdir(parents=True, exist_ok=True)
    moved = dataclasses.replace(settings, data_dir=data_dir,
                                database_url=f"sqlite:///{data_dir / 'eval.db'}")
    db = Database(moved.database_url)
    store_ids = {name: prepare_store(db, name, tau_dir) for name in stores}
    if index_cache is not None:
        moved.index_dir.mkdir(parents=True, exist_ok=True)
        for name, store_id in store_ids.items():
            cached = index_cache / name
            cached.mkdir(parents=True, exist_ok=True)
            link = moved.index_dir / f"store-{store_id}"
            if not link.exists():
                link.symlink_to(cached, target_is_directory=True)
    return World(moved, db, store_ids, DatabaseEvidence(db))
