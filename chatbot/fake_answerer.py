"""A model-free, scripted answerer: the test suites' and ``chatbot serve``'s one fake.

Test-only. :class:`FakeAnswerer` implements :class:`chatbot.types.Answerer` by replaying
queued token scripts with controllable delays, so protocol, server, console and replay tests
run fast and deterministically without the language model (``tests/fakes.py`` re-exports
it)::

    fake = FakeAnswerer()
    fake.queue(["Standard ", "shipping ", "takes ", "3-5 days."], delay_s=0.01,
               sources=[Source("policy", "shipping-policy", "Shipping policy")])
    fake.queue(["Hold on"], pause_at=1)       # stops before token 1 until fake.release()
    async for event in fake.answer(request): ...

With nothing queued it answers ``default``, or ``echo_tokens`` numbered echo pieces of the
message (``"where#0 is#1 my#2 where#3 "``), or else echoes ``You said: <message>`` word by
word. ``requests`` lists the last ``keep_requests`` requests (:data:`KEEP_REQUESTS` by
default), oldest first: bounded, so a fake-mode server that runs for hours
(``bench/load.py --fake``) does not grow; ``started``, ``finished`` and ``cancelled`` count
every generation, and ``active`` is how many are streaming now.

``CHATBOT_FAKE_ANSWERER=TOKENS:DELAY`` (e.g. ``40:0.05``) makes ``chatbot serve`` use
:meth:`FakeAnswerer.from_spec` instead of loading the model: every message is answered with
``TOKENS`` echo pieces, ``DELAY`` seconds apart. Crash-safety tests kill such a server in the
middle of slow replies; the load benchmark's ``--fake`` mode measures the server without the
model. Never set it in production: the replies are placeholders (it logs a warning at start).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatbot.errors import ConfigError
from chatbot.types import AnswerRequest, ReplyDone, ReplyEvent, ReplyToken, Source

# How many requests a FakeAnswerer keeps for inspection. A test makes a few dozen at most;
# a load run makes thousands, and only the counters need to cover all of them.
KEEP_REQUESTS = 1000


@dataclass
class Script:
    """One scripted reply."""

    tokens: list[str]
    delay_s: float = 0.0  # before every token after the first
    first_delay_s: float = 0.0  # before the first token (time to first token)
    sources: list[Source] = field(default_factory=list)
    handoff: bool = False
    verified_orders: frozenset[str] = frozenset()
    reason: str = "grounded"
    # Raise RuntimeError before this token index (simulates a pipeline crash).
    fail_at: int | None = None
    # Wait for FakeAnswerer.release() before this token index.
    pause_at: int | None = None
    # ReplyDone.text, when it should differ from the joined tokens.
    done_text: str | None = None
    # ReplyDone.action: a proposal's wire dict or an outcome event (issue #19).
    action: dict[str, Any] | None = None


class FakeAnswerer:
    """A scripted, streaming ``Answerer``."""

    def __init__(
        self,
        *,
        default: Sequence[str] | None = None,
        echo_tokens: int | None = None,
        delay_s: float = 0.0,
        first_delay_s: float = 0.0,
        ready: bool = True,
        keep_requests: int = KEEP_REQUESTS,
    ) -> None:
        self.scripts: deque[Script] = deque()
        self.default = list(default) if default is not None else None
        self.echo_tokens = echo_tokens
        self.delay_s = delay_s
        self.first_delay_s = first_delay_s
        self.ready = ready
        self._requests: deque[AnswerRequest] = deque(maxlen=keep_requests)
        self.started = 0
        self.finished = 0
        self.cancelled = 0
        self.active = 0
        self.tokens_emitted = 0
        self.paused = asyncio.Event()  # set while a script waits at ``pause_at``
        self._gate = asyncio.Event()

    @property
    def requests(self) -> list[AnswerRequest]:
        """The last ``keep_requests`` requests, oldest first (a copy: a list, so tests
        index, slice and compare it like one)."""
        return list(self._requests)

    @classmethod
    def from_spec(cls, spec: str) -> FakeAnswerer:
        """``CHATBOT_FAKE_ANSWERER``: ``"TOKENS:DELAY"`` (``"40:0.05"``) echo pieces per
        reply; ``"1"`` / ``"yes"`` mean 40 pieces 50 ms apart."""
        if spec.strip().lower() in ("1", "yes", "true", "on"):
            return cls(echo_tokens=40, delay_s=0.05)
        try:
            count, _, delay = spec.partition(":")
            tokens, delay_s = int(count), float(delay or 0.05)
        except ValueError as exc:
            raise ConfigError(
                f"CHATBOT_FAKE_ANSWERER must look like TOKENS:DELAY (e.g. 40:0.05), not {spec!r}"
            ) from exc
        if tokens < 1 or delay_s < 0:
            raise ConfigError("CHATBOT_FAKE_ANSWERER needs TOKENS >= 1 and DELAY >= 0")
        return cls(echo_tokens=tokens, delay_s=delay_s)

    def queue(self, tokens: Sequence[str], **options: object) -> Script:
        """Queue the next reply; options are :class:`Script` fields."""
        options.setdefault("delay_s", self.delay_s)
        options.setdefault("first_delay_s", self.first_delay_s)
        script = Script(tokens=list(tokens), **options)  # type: ignore[arg-type]
        self.scripts.append(script)
        return script

    def release(self) -> None:
        """Let a reply waiting at ``pause_at`` continue."""
        self.paused.clear()
        self._gate.set()

    async def wait_paused(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.paused.wait(), timeout)

    def _next_script(self, request: AnswerRequest) -> Script:
        if self.scripts:
            return self.scripts.popleft()
        reason = "grounded"
        if self.default is not None:
            words = list(self.default)
        elif self.echo_tokens is not None:
            # Numbered pieces: every piece of a long reply differs, so a client that shows
            # a piece twice or skips one is caught. Stored with reason "fake".
            names = request.message.split()[:3] or ["…"]
            words = [f"{names[i % len(names)]}#{i} " for i in range(self.echo_tokens)]
            reason = "fake"
        else:
            words = [f"{w} " for w in f"You said: {request.message}".split()]
        return Script(tokens=words, delay_s=self.delay_s, first_delay_s=self.first_delay_s,
                      reason=reason)

    async def answer(self, request: AnswerRequest) -> AsyncIterator[ReplyEvent]:
        """Yield the next script's tokens, then one ``ReplyDone``."""
        self._requests.append(request)
        script = self._next_script(request)
        self.started += 1
        self.active += 1
        try:
            for index, token in enumerate(script.tokens):
                await asyncio.sleep(script.first_delay_s if index == 0 else script.delay_s)
                if script.pause_at == index:
                    self._gate.clear()
                    self.paused.set()
                    await self._gate.wait()
                if script.fail_at == index:
                    raise RuntimeError("scripted answerer failure")
                self.tokens_emitted += 1
                yield ReplyToken(token)
            yield ReplyDone(
                text=script.done_text if script.done_text is not None else "".join(script.tokens),
                sources=list(script.sources),
                handoff=script.handoff,
                verified_orders=script.verified_orders,
                reason=script.reason,
                action=script.action,
            )
            self.finished += 1
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
