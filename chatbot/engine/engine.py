"""The async face of the engine: ``Engine.stream(request)`` yields text pieces.

The scheduler runs on one dedicated thread (torch releases the GIL inside its kernels,
so the event loop stays responsive). Each generated token is detokenized and checked
for stop strings on that thread, and the resulting text is handed to the request's
asyncio queue with ``loop.call_soon_threadsafe``. When the consumer stops iterating
(closed socket, cancelled task, ``aclose``), the sequence is cancelled and its KV slot
is freed before the next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from chatbot.engine import native
from chatbot.engine.formats import resolve_format
from chatbot.engine.model import Llama, piece_mode
from chatbot.engine.sampler import SamplingParams
from chatbot.engine.scheduler import Scheduler, Sequence
from chatbot.engine.tokens import IncrementalDetokenizer, StopMatcher
from chatbot.errors import ConfigError, GenerationError

if TYPE_CHECKING:
    from chatbot.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_MAX_LEN = 2048


@dataclass
class GenerationRequest:
    """Token ids in; how to generate the reply."""

    prompt_ids: list[int]
    max_new_tokens: int = 160
    temperature: float = 0.0  # 0 means greedy (deterministic)
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    cache_key: str | None = None  # e.g. conversation id: reuse KV cache across turns
    ignore_eos: bool = False  # run to max_new_tokens (benchmarks want fixed lengths)


@dataclass
class TokenEvent:
    """One step of one stream: the new text (maybe empty) and, at the end, why it ended."""

    text: str
    token_id: int  # -1 when no token came with this event
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "too_long"
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache


@dataclass
class Completion:
    """A whole reply, for callers that do not stream (tests, evaluation, the benchmark)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cached_tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0


@dataclass
class _Failure:
    error: BaseException


class Engine:
    """Continuous-batching text generation over a local Llama model."""

    def __init__(
        self,
        model: Llama,
        tokenizer: Any,
        *,
        max_batch: int = 64,
        max_len: int = DEFAULT_MAX_LEN,
        prefill_chunk: int = 64,
        eos_token_ids: tuple[int, ...] = (),
        draft_tokens: int = 4,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        eos = set(eos_token_ids) | set(model.config.eos_token_ids)
        if getattr(tokenizer, "eos_token_id", None) is not None:
            eos.add(int(tokenizer.eos_token_id))
        self.eos_token_ids = tuple(sorted(eos))
        self.scheduler = Scheduler(
            model,
            max_batch=max_batch,
            max_len=max_len,
            prefill_chunk=prefill_chunk,
            eos_token_ids=self.eos_token_ids,
            draft_tokens=draft_tokens,
        )
        self._thread: threading.Thread | None = None
        self._stopping = False

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """Load the model at ``settings.model_path`` (LoRA adapter merged in) and its tokenizer."""
        from transformers import AutoTokenizer

        from chatbot.engine.loader import require_model

        path = require_model(settings.model_path)
        if settings.engine_threads > 0:
            torch.set_num_threads(settings.engine_threads)
        fmt = resolve_format(settings.engine_dtype)
        adapter = settings.adapter_path
        if adapter is not None and not adapter.exists():
            raise ConfigError(f"LoRA adapter folder {adapter} does not exist")
        started = time.perf_counter()
        options = native.NativeOptions.from_settings(settings)
        kernel = native.kernel(options) if fmt == "q4" else None
        model = Llama.from_folder(path, fmt, adapter=adapter, kernel=kernel)
        model.batch_invariant = settings.engine_batch_invariant
        if model.batch_invariant and model.native_decoder is not None:
            # A step's prompt pieces in one pass where this CPU computes them exactly so
            model.pieces_together, model.piece_threads = piece_mode(model)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        log.info(
            "engine loaded %s (%s weights%s) in %.1fs",
            path,
            fmt,
            f", adapter {adapter}" if adapter else "",
            time.perf_counter() - started,
        )
        return cls(
            model,
            tokenizer,
            max_batch=settings.engine_max_batch,
            draft_tokens=settings.engine_draft_tokens,
        )

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        """Start the scheduler thread (idempotent)."""
        if self.ready:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="engine-scheduler", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Stop the scheduler thread; running streams end with a ``GenerationError``."""
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        """Blocking form of :meth:`close`, for synchronous callers."""
        thread = self._thread
        if thread is None:
            return
        with self.scheduler.work:
            self._stopping = True
            self.scheduler.work.notify()
        thread.join()
        self._thread = None

    def _run(self) -> None:
        sched = self.scheduler
        while True:
            with sched.work:
                while not sched.has_work and not self._stopping:
                    sched.work.wait()
                if self._stopping:
                    break
            try:
                sched.step()
            except Exception as exc:  # keep serving: fail this batch, not the process
                log.exception("engine step failed")
                sched.fail_all(exc)
        sched.fail_all(GenerationError("the engine was shut down"))

    # -- generation ---------------------------------------------------------------------

    def _validate(self, request: GenerationRequest) -> None:
        ids = request.prompt_ids
        if not ids:
            raise GenerationError("prompt_ids is empty")
        vocab = self.model.config.vocab_size
        if any(not isinstance(t, int) or t < 0 or t >= vocab for t in ids):
            raise GenerationError(f"prompt_ids must be token ids in [0, {vocab})")
        if len(ids) >= self.scheduler.max_len:
            raise GenerationError(
                f"prompt of {len(ids)} tokens exceeds the context of {self.scheduler.max_len}"
            )
        if request.max_new_tokens < 1:
            raise GenerationError("max_new_tokens must be at least 1")
        if request.temperature < 0 or not 0 < request.top_p <= 1:
            raise GenerationError("temperature must be >= 0 and top_p in (0, 1]")

    async def stream_events(self, request: GenerationRequest) -> AsyncGenerator[TokenEvent, None]:
        """Like :meth:`stream`, but one :class:`TokenEvent` per generated token."""
        self._validate(request)
        await self.start()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TokenEvent | _Failure] = asyncio.Queue()
        detok = IncrementalDetokenizer(self.tokenizer, request.prompt_ids)
        stops = StopMatcher(request.stop)
        eos = frozenset(self.eos_token_ids)

        def post(item: TokenEvent | _Failure) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the consumer's event loop is gone: stop generating
                return False
            return True

        def sink(seq: Sequence, token: int, finish: str | None) -> bool:
            # Runs on the scheduler thread. Returns True to stop the sequence.
            if finish == "error":
                post(_Failure(seq.error or GenerationError("generation failed")))
                return True
            piece = detok.push(token) if token >= 0 and token not in eos else ""
            if finish is not None:
                piece += detok.flush()
            text = stops.push(piece)
            if stops.stopped:
                finish = "stop"
            elif finish is not None:
                text += stops.flush()
            delivered = post(TokenEvent(text, token, finish, seq.cached_hit))
            return stops.stopped or not delivered

        params = SamplingParams(
            max_new_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            ignore_eos=request.ignore_eos,
        )
        seq = self.scheduler.submit(list(request.prompt_ids), params, sink, request.cache_key)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Failure):
                    if isinstance(item.error, GenerationError):
                        raise item.error
                    raise GenerationError(f"generation failed: {item.error}") from item.error
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # Covers the consumer stopping early, task cancellation and aclose():
            # the scheduler drops the sequence before its next step.
            if seq.finish_reason is None:
                self.scheduler.cancel(seq.id)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Yield the reply's text pieces as soon as they decode to whole characters."""
        events = self.stream_events(request)
        try:
            async for event in events:
                if event.text:
                    yield event.text
        finally:
            await events.aclose()

    async def complete(self, request: GenerationRequest) -> Completion:
        """Generate the whole reply and return it with its token ids and timings."""
        started = time.perf_counter()
        out = Completion(text="")
        pieces: list[str] = []
        async for event in self.stream_events(request):
            if event.token_id >= 0:
                if not out.token_ids:
                    out.ttft_s = time.perf_counter() - started
                out.token_ids.append(event.token_id)
            pieces.append(event.text)
            out.finish_reason = event.finish_reason or out.finish_reason
            out.cached_tokens = event.cached_tokens
        out.text = "".join(pieces)
        out.total_s = time.perf_counter() - started
        return out
