"""Continuous batching: every step runs all active sequences through one forward pass.

The scheduler deals only in token ids. Each :meth:`Scheduler.step`:

1. takes in new and cancelled requests (thread-safe; they join and leave between steps),
2. admits waiting requests into free KV slots, copying the longest cached prefix
   (a previous turn of the same conversation, or a shared system prompt) instead of
   recomputing it,
3. builds one flat batch: one token per decoding sequence plus a bounded chunk of
   prompt tokens (chunked prefill, so a long new prompt never stalls running streams),
4. runs the model once and samples the next token of every row that needs one,
5. reports each token to its sequence's sink, which may ask to stop (stop strings).

Prompt-lookup drafting (greedy sequences, small steps only): grounded replies copy whole
runs of tokens from the facts in their prompt, so when the last few tokens of a sequence
occur earlier in it, the tokens that followed there are a cheap guess at what comes next.
The guess is verified in the same forward pass (the sequence's row becomes a short chunk
with logits on every token); the longest prefix the model agrees with is kept, plus the
model's own next token. A step of one or two rows costs about the same with four more
tokens in it, so a reply that quotes its facts streams several tokens per step. The
result is the model's greedy choice at every position, as without drafting.

The scheduler decides what runs; the model runner (``runner.py``) picks the kernels and
threads for each step and runs the model, and the sampler (``sampler.py``) turns logits
into tokens and checks drafts. The owner (``Engine``) calls ``step`` in a loop on a
dedicated thread.
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from chatbot.engine.model import (
    FEW_DECODE_ROWS,
    KVCache,
    Llama,
    Prefill,
    StepPlan,
    prompt_piece_end,
    prompt_piece_floor,
    system_prompt_end,
)
from chatbot.engine.prefix_cache import CacheHit, PrefixCache
from chatbot.engine.runner import ModelRunner
from chatbot.engine.sampler import (  # noqa: F401  (SamplingParams, sample_top_p: re-exported)
    SamplingParams,
    accepted_length,
    greedy_picks,
    next_draft_length,
    pick_tokens,
    prompt_lookup,
    sample_top_p,
)

log = logging.getLogger(__name__)

# Called on the scheduler thread after every generated token (``finish`` is None while
# the sequence goes on). Return True to stop the sequence now (a stop string matched).
Sink = Callable[["Sequence", int, "str | None"], bool]


class State(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    DONE = "done"


@dataclass(eq=False)
class Sequence:
    """One request's tokens and progress. ``tokens`` is prompt + generated ids."""

    id: int
    prompt_len: int
    tokens: list[int]
    params: SamplingParams
    sink: Sink
    cache_key: str | None = None
    state: State = State.WAITING
    slot: int = -1
    n_cached: int = 0  # tokens whose keys/values are in the slot
    cached_hit: int = 0  # how many prompt tokens came from the prefix cache
    finish_reason: str | None = None
    error: BaseException | None = None  # set with finish_reason "error"
    finished_step: int = -1  # the scheduler step count when the slot was freed
    generator: torch.Generator | None = field(default=None, repr=False)
    draft_len: int = 2  # how many tokens the next draft may have (follows acceptance)
    system_end: int = 0  # with aligned prefill: where its system prompt ends (prompt pieces)
    # the next-token logits after the prompt, kept for the prefix cache's entry of it
    first_logits: torch.Tensor | None = field(default=None, repr=False)

    @property
    def n_generated(self) -> int:
        return len(self.tokens) - self.prompt_len


@dataclass
class Batch:
    """One step as planned: the flat tokens, their plan, and per sequence in it its row
    count and whether it wants a next token; ``drafts``: draft tokens by sequence id."""

    tokens: list[int]
    plan: StepPlan
    rows: list[tuple[Sequence, int, bool]]
    drafts: dict[int, list[int]]


class Scheduler:
    """Runs many sequences together on one :class:`Llama` and one :class:`KVCache`."""

    def __init__(
        self,
        model: Llama,
        *,
        max_batch: int = 64,
        max_len: int = 2048,
        prefill_chunk: int = 64,
        idle_prefill_chunk: int = 512,
        prefix_cache_bytes: int = 128 * 1024 * 1024,
        eos_token_ids: tuple[int, ...] = (),
        draft_tokens: int = 4,
        draft_max_rows: int = 2,
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_len = min(max_len, model.config.max_positions)
        self.prefill_chunk = prefill_chunk
        self.idle_prefill_chunk = idle_prefill_chunk
        self.eos = frozenset(eos_token_ids or model.config.eos_token_ids)
        self.cache = KVCache(
            model.config, max_slots=max_batch, max_len=self.max_len, dtype=model.kv_dtype
        )
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self.whole_hits = 0  # prompts answered from the prefix cache with no forward pass
        # With the native kernel, prompts are computed in aligned pieces (Llama.forward),
        # so a reply does not depend on the batch or the prefix cache (issue #16).
        self.aligned_prefill = getattr(model, "native_decoder", None) is not None and getattr(
            model, "batch_invariant", True
        )
        self.active: list[Sequence] = []  # ordered by slot: decoding first, then prefilling
        self.waiting: list[Sequence] = []
        self._incoming: list[Sequence] = []
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        self.work = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self.steps = 0
        self.runner = ModelRunner(model)
        # Drafts of up to ``draft_tokens`` tokens while at most ``draft_max_rows`` sequences
        # decode (a big batch is already compute-bound: extra rows would cost real time).
        self.draft_tokens = draft_tokens
        self.draft_max_rows = draft_max_rows
        self.drafted = 0  # draft tokens proposed / accepted (for benchmarks and tests)
        self.accepted = 0

    # -- thread-safe entry points -------------------------------------------------------

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        sink: Sink,
        cache_key: str | None = None,
    ) -> Sequence:
        """Queue a new sequence; it joins the batch at the next step."""
        seq = Sequence(
            id=next(self._ids),
            prompt_len=len(prompt_ids),
            tokens=list(prompt_ids),
            params=params,
            sink=sink,
            cache_key=cache_key,
        )
        if self.aligned_prefill:
            seq.system_end = system_prompt_end(prompt_ids, self.eos)
        if params.temperature > 0:
            seq.generator = torch.Generator()
            seq.generator.manual_seed(
                params.seed if params.seed is not None else torch.seed() & 0xFFFF_FFFF
            )
        with self.work:
            self._incoming.append(seq)
            self.work.notify()
        return seq

    def cancel(self, seq_id: int) -> None:
        """Stop a sequence; its slot is freed at the start of the next step."""
        with self.work:
            self._cancelled.add(seq_id)
            self.work.notify()

    @property
    def has_work(self) -> bool:
        return bool(self.active or self.waiting or self._incoming)

    # -- one step -----------------------------------------------------------------------

    def step(self) -> int:
        """Run one batched forward pass; returns how many tokens were processed."""
        self._take_incoming()
        self._admit()
        self._retire()  # a prompt answered from the prefix cache may have ended already
        if not self.active:
            if self.cache.slots > 1:
                self.cache.shrink()  # give the memory back while idle
            return 0
        batch = self._plan()
        logits = self.runner.run(batch.tokens, batch.plan, self.cache)
        self.steps += 1
        self._advance(batch)
        self._take_tokens(batch, logits)
        self._retire()
        return len(batch.tokens)

    def _advance(self, batch: Batch) -> None:
        """The step's prompt chunks are cached now; finished prompts start decoding. (A
        drafting sequence's cached length moves in :meth:`_accept`.)"""
        for seq, chunk_len, _ in batch.rows:
            if seq.id not in batch.drafts:
                seq.n_cached += chunk_len
        for seq, _, _ in batch.rows:
            if seq.state is State.PREFILL and seq.n_cached == len(seq.tokens):
                self._prefill_done(seq)

    def _take_tokens(self, batch: Batch, logits: torch.Tensor) -> None:
        """Each wanting row's next token (sampled or greedy), and each draft checked."""
        # One logit row per wanting row, except a drafting sequence has 1 + len(draft).
        at = 0
        plain: list[Sequence] = []
        plain_rows: list[int] = []
        verified: list[tuple[Sequence, list[int]]] = []
        for seq, chunk_len, want in batch.rows:
            if seq.id in batch.drafts:
                verified.append((seq, greedy_picks(logits[at : at + chunk_len])))
                at += chunk_len
            elif want:
                plain.append(seq)
                plain_rows.append(at)
                at += 1
        # Prompts done this step pick their first token one at a time (they are few, and
        # their logits are kept); the others in one go.
        first = [i for i, s in enumerate(plain) if s.n_generated == 0]
        rest = [i for i, s in enumerate(plain) if s.n_generated > 0]
        for i in first:
            self._first_token(plain[i], logits[plain_rows[i]].clone())
        params = [plain[i].params for i in rest]
        generators = [plain[i].generator for i in rest]
        for i, token in pick_tokens(logits[[plain_rows[i] for i in rest]], params, generators):
            self._emit(plain[rest[i]], token)
        for seq, picks in verified:
            self._accept(seq, batch.drafts[seq.id], picks)

    def fail_all(self, error: BaseException) -> None:
        """End every sequence with ``error`` (a failed step, or shutdown) and reset the cache."""
        with self.work:
            incoming, self._incoming = self._incoming, []
            self._cancelled.clear()
        for seq in [*self.active, *self.waiting, *incoming]:
            if seq.state is not State.DONE:
                seq.state, seq.finish_reason, seq.error = State.DONE, "error", error
                self._notify(seq, -1)
        self.active, self.waiting = [], []
        self.cache.shrink()

    def _take_incoming(self) -> None:
        with self.work:
            incoming, self._incoming = self._incoming, []
            cancelled, self._cancelled = self._cancelled, set()
        self.waiting.extend(incoming)
        if not cancelled:
            return
        for seq in self.waiting:
            if seq.id in cancelled:
                seq.state, seq.finish_reason = State.DONE, "cancelled"
                seq.finished_step = self.steps
        self.waiting = [s for s in self.waiting if s.state is not State.DONE]
        for seq in self.active:
            if seq.id in cancelled and seq.state is not State.DONE:
                seq.state, seq.finish_reason = State.DONE, "cancelled"
        self._retire()

    def _admit(self) -> None:
        joining = self.waiting[: self.max_batch - len(self.active)]
        if joining:
            # one cache growth for everyone joining now, not one per sequence
            longest = min(max(len(s.tokens) for s in joining) + 1, self.max_len)
            self.cache.reserve(len(self.active) + len(joining), longest)
        while self.waiting and len(self.active) < self.max_batch:
            seq = self.waiting.pop(0)
            if seq.prompt_len >= self.max_len:
                seq.state, seq.finish_reason = State.DONE, "too_long"
                self._notify(seq, -1)
                continue
            slot = len(self.active)
            self.cache.reserve(slot + 1, len(seq.tokens) + 1)
            hit = self.prefix_cache.lookup(seq.tokens, seq.cache_key)
            if hit is not None and hit.whole_prompt(seq.tokens):
                self._start_from_cache(seq, slot, hit)
                continue
            if hit is not None:
                # Keep at least one prompt token to compute: its logits give the first token.
                # With aligned prefill, reuse what the donor computed as a prompt, up to a
                # piece end, so the rest of the prompt is computed in the same pieces as
                # without the cache.
                n = min(hit.length, len(seq.tokens) - 1)
                if self.aligned_prefill:
                    n = prompt_piece_floor(min(n, hit.prompt_len), seq.prompt_len, seq.system_end)
                if n > 0:
                    self.cache.write(slot, hit.k[:, :, :n], hit.v[:, :, :n])
                    seq.n_cached = seq.cached_hit = n
            seq.slot, seq.state = slot, State.PREFILL
            self.active.append(seq)

    def _start_from_cache(self, seq: Sequence, slot: int, hit: CacheHit) -> None:
        """A prompt the prefix cache holds whole, with the logits after it: its keys/values
        are copied and its first token picked from those logits, with no forward pass (the
        same token the donor's pass gave; see prefix_cache)."""
        n = len(seq.tokens)
        self.cache.write(slot, hit.k[:, :, :n], hit.v[:, :, :n])
        seq.n_cached = seq.cached_hit = n
        seq.slot, seq.state = slot, State.PREFILL
        self.active.append(seq)
        self._prefill_done(seq)
        self.whole_hits += 1
        assert hit.logits is not None
        self._first_token(seq, hit.logits)

    def _first_token(self, seq: Sequence, logits: torch.Tensor) -> None:
        """Pick a sequence's first token from the logits after its prompt, and keep those
        for the prefix cache (its prompt's entry now, or its conversation's when it ends)."""
        seq.first_logits = logits
        if seq.cache_key is None and seq.cached_hit < seq.prompt_len - 16:
            k, v = self.cache.read(seq.slot, seq.prompt_len)
            self.prefix_cache.store(tuple(seq.tokens[: seq.prompt_len]), k, v, key=None,
                                    prompt_len=seq.prompt_len, logits=logits)
        [(_, token)] = pick_tokens(logits[None], [seq.params], [seq.generator])
        self._emit(seq, token)

    def _plan(self) -> Batch:
        decoding = [s for s in self.active if s.state is State.DECODE]
        prefilling = [s for s in self.active if s.state is State.PREFILL]
        plan = StepPlan()
        tokens: list[int] = []
        rows: list[tuple[Sequence, int, bool]] = []
        longest = 0
        drafts: dict[int, list[int]] = {}
        if self.draft_tokens > 0 and len(decoding) <= self.draft_max_rows:
            for seq in decoding:
                draft = self._draft(seq)
                if draft:
                    drafts[seq.id] = draft
        for seq in decoding:
            # a drafting sequence's rows: its last token, then the draft, at the next positions
            chunk = [seq.tokens[seq.n_cached], *drafts.get(seq.id, ())]
            for i, token in enumerate(chunk):
                plan.decode_positions.append(seq.n_cached + i)
                plan.decode_slots.append(seq.slot)
                plan.logit_rows.append(len(tokens))
                tokens.append(token)
            rows.append((seq, len(chunk), True))
            longest = max(longest, seq.n_cached + len(chunk))
        if len(decoding) > FEW_DECODE_ROWS and not drafts:
            plan.shared_prefix = shared_prefix_length(decoding)
        budget = self.prefill_chunk if decoding else self.idle_prefill_chunk
        for seq in prefilling:
            if budget <= 0:
                break
            take = min(budget, len(seq.tokens) - seq.n_cached)
            if self.aligned_prefill:
                # whole pieces only, each its own chunk (see prompt_piece_end)
                take = 0
                while seq.n_cached + take < len(seq.tokens):
                    at = seq.n_cached + take
                    end = prompt_piece_end(at, seq.prompt_len, seq.system_end)
                    if take + end - at > budget:
                        break
                    plan.prefills.append(Prefill(seq.slot, at, end - at))
                    take += end - at
                if take == 0:
                    break
            else:
                plan.prefills.append(Prefill(seq.slot, seq.n_cached, take))
            tokens.extend(seq.tokens[seq.n_cached : seq.n_cached + take])
            done = seq.n_cached + take == len(seq.tokens)
            if done:
                plan.logit_rows.append(len(tokens) - 1)
            rows.append((seq, take, done))
            longest = max(longest, seq.n_cached + take)
            budget -= take
        self.cache.reserve(len(self.active), longest + 1)
        return Batch(tokens, plan, rows, drafts)

    def _draft(self, seq: Sequence) -> list[int]:
        """Prompt lookup: the tokens that followed the latest earlier occurrence of this
        sequence's last 3 (else 2) tokens, up to ``draft_tokens``; [] when none is found
        or the sequence samples (drafts are checked against greedy picks only)."""
        if seq.params.temperature > 0:
            return []
        room = min(
            self.draft_tokens,
            seq.draft_len,
            seq.params.max_new_tokens - seq.n_generated - 1,
            self.max_len - len(seq.tokens) - 1,
        )
        return prompt_lookup(seq.tokens, room)

    def _accept(self, seq: Sequence, draft: list[int], picks: list[int]) -> None:
        """Keep the draft's longest prefix that matches the model's greedy picks, then the
        model's next token; the keys/values of rejected draft tokens are simply overwritten
        later (the sequence's cached length stops before them)."""
        agreed = accepted_length(draft, picks)
        self.drafted += len(draft)
        self.accepted += agreed
        seq.draft_len = next_draft_length(draft, agreed)
        cached = seq.n_cached + 1 + agreed
        for token in picks[: agreed + 1]:
            self._emit(seq, token)
            if seq.state is State.DONE:
                break
        # Ending early (end of text, length, a stop string) leaves fewer tokens than cached.
        seq.n_cached = min(cached, len(seq.tokens))

    def _prefill_done(self, seq: Sequence) -> None:
        """A prompt is fully cached: move the sequence to the decode slots."""
        # A conversation's KV is stored when it finishes (under its cache_key) and also
        # serves other conversations as a prefix donor; others store their prompt with its
        # first token's logits (_first_token).
        n_dec = sum(1 for s in self.active if s.state is State.DECODE)
        other = self.active[n_dec]
        if other is not seq:
            length = max(seq.n_cached, other.n_cached)
            self.cache.swap(seq.slot, other.slot, length)
            i, j = self.active.index(seq), n_dec
            self.active[i], self.active[j] = other, seq
            seq.slot, other.slot = other.slot, seq.slot
        seq.state = State.DECODE

    def _emit(self, seq: Sequence, token: int) -> None:
        if seq.state is State.DONE:
            return
        seq.tokens.append(token)
        if token in self.eos and not seq.params.ignore_eos:
            seq.finish_reason = "stop"
        elif seq.n_generated >= seq.params.max_new_tokens or len(seq.tokens) >= self.max_len:
            seq.finish_reason = "length"
        stop = self._notify(seq, token)
        if stop and seq.finish_reason is None:
            seq.finish_reason = "stop"
        if seq.finish_reason is not None:
            seq.state = State.DONE

    def _notify(self, seq: Sequence, token: int) -> bool:
        try:
            return bool(seq.sink(seq, token, seq.finish_reason))
        except Exception:  # a broken consumer must not take the batch down with it
            log.exception("sink of sequence %d failed; cancelling it", seq.id)
            seq.finish_reason = "cancelled"
            return True

    def _retire(self) -> None:
        """Remove finished sequences, keeping the slots packed: decoding first, then prefilling.

        Only sequences outside their group's new slot range move (one KV copy each), into
        slots freed by finished sequences.
        """
        done = [s for s in self.active if s.state is State.DONE]
        if not done:
            return
        for seq in done:
            if seq.cache_key is not None and seq.n_cached > 0:
                k, v = self.cache.read(seq.slot, seq.n_cached)
                self.prefix_cache.store(
                    tuple(seq.tokens[: seq.n_cached]), k, v, seq.cache_key, seq.prompt_len,
                    logits=seq.first_logits,
                )
            if seq.finish_reason == "cancelled":
                self._notify(seq, -1)
        decoding = [s for s in self.active if s.state is State.DECODE]
        prefilling = [s for s in self.active if s.state is State.PREFILL]
        start = 0
        for group in (decoding, prefilling):
            end = start + len(group)
            taken = {s.slot for s in group if start <= s.slot < end}
            free = iter(sorted(set(range(start, end)) - taken))
            for seq in group:
                if not start <= seq.slot < end:
                    target = next(free)
                    self.cache.move(seq.slot, target, seq.n_cached)
                    seq.slot = target
            start = end
        self.active = sorted(decoding + prefilling, key=lambda s: s.slot)
        # Only now: a thread that sees finished_step set also sees the slot freed.
        for seq in done:
            seq.finished_step = self.steps


def shared_prefix_length(seqs: list[Sequence]) -> int:
    """How many leading cached tokens all ``seqs`` have in common (their system prompt)."""
    if not seqs:
        return 0
    common = os.path.commonprefix([s.tokens for s in seqs])
    return min(len(common), *(s.n_cached for s in seqs))
