"""Group commit for token events: many conversations' appends in one transaction.

Streaming replies write small batches of token events all the time. One transaction per
batch per conversation makes the database (above all SQLite, which has one writer at a
time) the bottleneck long before the engine is. The group writer queues appends from all
conversations and commits whatever is pending in a single transaction, while the previous
one is still committing more requests pile up, so the number of commits per second stays
bounded however many replies stream.

Each request keeps its own semantics: seqs come from its conversation's ``last_seq`` in the
same transaction, and a bot append refused because a human owns the conversation
(``BotSilencedError``) fails only that request; nothing was written for it, so the
others commit normally.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from chatbot.conversations.hub import StoredEvent
from chatbot.conversations.log import NewEvent, append_events
from chatbot.errors import ChatbotError
from chatbot.storage.db import Database, transaction

log = logging.getLogger(__name__)


@dataclass
class _Request:
    conversation_id: int
    events: Sequence[NewEvent]
    bot_only: bool
    future: asyncio.Future[list[StoredEvent]]


class GroupWriter:
    """Appends events for many conversations per transaction; one transaction at a time."""

    def __init__(
        self, db: Database, executor: Executor | None = None, *, max_requests: int = 512
    ) -> None:
        self.db = db
        self.executor = executor
        self.max_requests = max_requests
        self._pending: list[_Request] = []
        self._task: asyncio.Task[None] | None = None
        self.commits = 0  # for tests and benchmarks

    async def append(
        self, conversation_id: int, events: Sequence[NewEvent], *, bot_only: bool = False
    ) -> list[StoredEvent]:
        """Append ``events`` in the next group transaction; returns them numbered."""
        future: asyncio.Future[list[StoredEvent]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(conversation_id, events, bot_only, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="group-writer")
        return await future

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_requests]
            del self._pending[: self.max_requests]
            try:
                loop = asyncio.get_running_loop()
                results = await loop.run_in_executor(self.executor, self._commit, batch)
            except Exception as exc:
                log.exception("group commit of %d appends failed", len(batch))
                results = [exc] * len(batch)
            for request, result in zip(batch, results, strict=True):
                if request.future.done():  # the caller went away
                    continue
                if isinstance(result, BaseException):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)

    def _commit(self, batch: list[_Request]) -> list[list[StoredEvent] | BaseException]:
        out: list[list[StoredEvent] | BaseException] = []
        with transaction(self.db.sessions) as session:
            for request in batch:
                try:
                    out.append(
                        append_events(
                            session,
                            request.conversation_id,
                            request.events,
                            bot_only=request.bot_only,
                        )
                    )
                except ChatbotError as exc:
                    # Raised before anything was written for this request (its UPDATE
                    # matched no row), so the transaction is still good for the others.
                    out.append(exc)
        self.commits += 1
        return out
