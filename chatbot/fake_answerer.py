"""A model-free answerer for tests and benchmarks of the real ``chatbot serve`` process.

Test-only. ``CHATBOT_FAKE_ANSWERER=TOKENS:DELAY`` (e.g. ``40:0.05``) makes ``chatbot serve``
answer every message with ``TOKENS`` echo pieces, ``DELAY`` seconds apart, instead of loading
the language model. Crash-safety tests kill such a server in the middle of slow replies;
the load benchmark's ``--fake`` mode measures the server without the model. Never set it
in production: the replies are placeholders (it logs a warning at start).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from chatbot.errors import ConfigError
from chatbot.types import AnswerRequest, ReplyDone, ReplyEvent, ReplyToken


class SlowEchoAnswerer:
    """Streams ``tokens`` numbered echo pieces of the message, ``delay_s`` apart."""

    ready = True

    def __init__(self, tokens: int = 40, delay_s: float = 0.05) -> None:
        self.tokens = tokens
        self.delay_s = delay_s

    @classmethod
    def from_spec(cls, spec: str) -> SlowEchoAnswerer:
        """Parse ``"TOKENS:DELAY"`` (``"40:0.05"``); ``"1"``/``"yes"`` mean the defaults."""
        if spec.strip().lower() in ("1", "yes", "true", "on"):
            return cls()
        try:
            count, _, delay = spec.partition(":")
            answerer = cls(int(count), float(delay or 0.05))
        except ValueError as exc:
            raise ConfigError(
                f"CHATBOT_FAKE_ANSWERER must look like TOKENS:DELAY (e.g. 40:0.05), not {spec!r}"
            ) from exc
        if answerer.tokens < 1 or answerer.delay_s < 0:
            raise ConfigError("CHATBOT_FAKE_ANSWERER needs TOKENS >= 1 and DELAY >= 0")
        return answerer

    async def answer(self, request: AnswerRequest) -> AsyncIterator[ReplyEvent]:
        """Yield ``echo(i) `` pieces naming the message, then ``ReplyDone``."""
        words = request.message.split()[:3] or ["…"]
        pieces = [f"{words[i % len(words)]}#{i} " for i in range(self.tokens)]
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(self.delay_s)
            yield ReplyToken(piece)
        yield ReplyDone(text="".join(pieces), reason="fake")
