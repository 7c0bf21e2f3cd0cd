"""Bot replies: one in flight per conversation, a bounded queue, token batching, stopping.

For each conversation with work, a worker task answers queued shopper messages one at a
time. A reply reads ownership from the database before it starts (a human owns it: the
bot stays silent), streams the answerer's tokens into the event log in small batches
(one transaction per batch, at most every ``flush_interval_s``; the first token goes at
once), and ends with a ``done`` event. It stops at once, keeping the partial text as an
*interrupted* reply, when:

- an agent takes over (the hub's ``cancel_reply``; and in any process, the next token
  write is refused in SQL),
- the shopper sends ``stop``,
- the server shuts down (after a drain period),
- nobody has been connected to the conversation for ``grace_s`` (so a page reload in the
  middle of a reply picks it up, but abandoned replies do not run for nobody).

Stopping is cooperative: the answerer's iterator is closed (so the engine frees the
sequence within a step), but database writes are never cancelled half-way, so what was
stored and what was sent always agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chatbot.conversations.hub import ConversationHub
from chatbot.conversations.log import BotSilencedError, ConversationRef
from chatbot.conversations.models import new_public_id
from chatbot.conversations.ownership import Action
from chatbot.conversations.service import ConversationService
from chatbot.errors import ChatbotError
from chatbot.protocol import chat
from chatbot.protocol.common import ErrorCode
from chatbot.server.metrics import ServerMetrics
from chatbot.types import Answerer, AnswerRequest, ReplyDone, ReplyToken

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingMessage:
    """A stored, acked shopper message waiting for its reply."""

    client_id: str
    text: str
    seq: int
    stored_at: float = field(default_factory=time.monotonic)
    ip: str = ""  # the shopper's address, for per-address limits in the answerer
    # A ``confirm`` frame's answer to a proposed order action: (action id, accept); the
    # text is then only what the transcript shows ("Confirm" / "Keep my order").
    confirm: tuple[str, bool] | None = None


class TokenBatcher:
    """Collects token texts and writes them in batches, preserving order."""

    def __init__(self, write: Callable[[list[str]], Awaitable[None]], interval_s: float) -> None:
        self._write = write
        self._interval = interval_s
        self._buf: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._last = 0.0
        self._closing = asyncio.Event()
        self.error: BaseException | None = None

    def add(self, text: str) -> None:
        if self.error is not None:
            return
        self._buf.append(text)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._buf:
                wait = self._last + self._interval - loop.time()
                if wait > 0 and not self._closing.is_set():
                    # Let a few more tokens pile up, unless the reply is ending.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), wait)
                batch, self._buf = self._buf, []
                self._last = loop.time()
                await self._write(batch)
        except Exception as exc:
            self.error = exc
            self._buf.clear()

    async def close(self) -> None:
        """Write what is left; re-raises the first write error."""
        self._closing.set()
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
            if self._buf and self.error is None:
                self._task = asyncio.create_task(self._run())
        if self.error is not None:
            raise self.error


@dataclass
class _Worker:
    conv: ConversationRef
    queue: deque[PendingMessage] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event | None = None  # set to stop the reply in flight
    stop_reason: str = ""
    reply_id: str | None = None
    grace: asyncio.TimerHandle | None = None


# Replies after which the conversation is handed to the team by itself: the shopper asked
# for a person, or asked for something the bot cannot do (chatbot/answering/escalation.py).
HANDOFF_REASONS = frozenset({"asked_human", "cannot_do"})


class ReplyManager:
    """Runs bot replies for all conversations of this process."""

    def __init__(
        self,
        service: ConversationService,
        hub: ConversationHub,
        metrics: ServerMetrics,
        answerer: Callable[[], Answerer | None],
        *,
        max_queued: int = 3,
        flush_interval_s: float = 0.03,
        grace_s: float = 15.0,
        handoff_gate: Callable[[str], bool] | None = None,
        action_outcomes: Callable[[ConversationRef], Awaitable[list[dict[str, Any]]]]
        | None = None,
    ) -> None:
        self.service = service
        # The ``action`` events of the conversation's proposals that ended and are not in
        # its log yet (issue #19): one the shopper moved on from, one whose reply was cut
        # short before the answerer's ReplyDone. Stored with every reply's ``done``.
        self.action_outcomes = action_outcomes
        # Whether an address may create one more waiting conversation (issue #18).
        self.handoff_gate = handoff_gate
        self.hub = hub
        self.metrics = metrics
        self.answerer = answerer
        self.max_queued = max_queued
        self.flush_interval_s = flush_interval_s
        self.grace_s = grace_s
        self.workers: dict[int, _Worker] = {}
        self.closing = False

    # ---- called by the sockets ---------------------------------------------------------

    def can_accept(self, conversation_id: int) -> bool:
        """False when the conversation already has ``max_queued`` messages waiting."""
        worker = self.workers.get(conversation_id)
        return worker is None or len(worker.queue) < self.max_queued

    def submit(self, conv: ConversationRef, message: PendingMessage) -> None:
        """Queue ``message`` for a reply (the caller checked ``can_accept``)."""
        if self.closing:
            return
        worker = self.workers.get(conv.id)
        if worker is None:
            worker = self.workers[conv.id] = _Worker(conv)
        worker.queue.append(message)
        if worker.task is None or worker.task.done():
            worker.task = asyncio.create_task(self._work(worker), name=f"replies-{conv.id}")

    def stop(self, conversation_id: int, reason: str, reply_id: str | None = None) -> bool:
        """Stop the reply in flight (if ``reply_id`` matches); True if one was stopped."""
        worker = self.workers.get(conversation_id)
        if worker is None or worker.stop is None or worker.reply_id is None:
            return False
        if reply_id is not None and reply_id != worker.reply_id:
            return False
        worker.stop_reason = reason
        worker.stop.set()
        if reason in ("takeover", "disconnected"):
            worker.queue.clear()
        return True

    def current_reply(self, conversation_id: int) -> str | None:
        worker = self.workers.get(conversation_id)
        return worker.reply_id if worker else None

    def connection_left(self, conversation_id: int) -> None:
        """A socket of the conversation closed: start the grace timer if it was the last."""
        worker = self.workers.get(conversation_id)
        if worker is None or self.hub.subscribers(conversation_id) > 0 or self.grace_s <= 0:
            return
        if worker.grace is not None:
            worker.grace.cancel()
        loop = asyncio.get_running_loop()
        worker.grace = loop.call_later(self.grace_s, self._grace_over, conversation_id)

    def _grace_over(self, conversation_id: int) -> None:
        if self.hub.subscribers(conversation_id) == 0:
            self.stop(conversation_id, "disconnected")

    async def shutdown(self, drain_s: float) -> None:
        """Let replies finish for ``drain_s``, then stop the rest as interrupted."""
        self.closing = True
        tasks = [w.task for w in self.workers.values() if w.task and not w.task.done()]
        for worker in self.workers.values():
            worker.queue.clear()
        if tasks and drain_s > 0:
            await asyncio.wait(tasks, timeout=drain_s)
        for conversation_id in list(self.workers):
            self.stop(conversation_id, "shutdown")
        if tasks:
            await asyncio.wait(tasks, timeout=30)

    # ---- the worker ------------------------------------------------------------------------

    async def _work(self, worker: _Worker) -> None:
        canceller = self._canceller(worker)
        self.hub.register_reply(worker.conv.id, canceller)
        try:
            while worker.queue and not self.closing:
                message = worker.queue.popleft()
                try:
                    await self._reply(worker, message)
                except Exception:
                    log.exception("reply for conversation %s failed", worker.conv.public_id)
        finally:
            self.hub.unregister_reply(worker.conv.id, canceller)
            if worker.grace is not None:
                worker.grace.cancel()
            if not worker.queue and self.workers.get(worker.conv.id) is worker:
                del self.workers[worker.conv.id]

    def _canceller(self, worker: _Worker) -> Callable[[str], bool]:
        return lambda reason: self.stop(worker.conv.id, reason)

    def _error(self, conv: ConversationRef, code: str, message: str, ref: str) -> None:
        self.metrics.errors.inc(1, code)
        self.service.publish_ephemeral(
            conv, chat.Error(code=code, message=message, ref=ref)
        )

    async def _reply(self, worker: _Worker, message: PendingMessage) -> None:
        answerer = self.answerer()
        if answerer is None:
            self._error(
                worker.conv,
                ErrorCode.NOT_READY,
                "The assistant is starting; an agent will see your message.",
                message.client_id,
            )
            return
        reply_id = new_public_id("r")
        # Ownership is read from the database here, in the transaction that creates the
        # reply: a human owns it -> no reply at all.
        ctx = await self.service.begin_reply(worker.conv, message.seq, reply_id, message.client_id)
        if ctx is None:
            return
        conv, state = ctx.conv, ctx.conv.state
        request = AnswerRequest(
            store_id=conv.store_id,
            message=message.text,
            history=ctx.history,
            customer_id=conv.customer_id,
            verified_orders=ctx.verified_orders,
            conversation_key=conv.public_id,
            client_ip=message.ip,
            state=ctx.dialogue,
            confirm=message.confirm,
        )
        worker.reply_id, worker.stop, worker.stop_reason = reply_id, asyncio.Event(), ""
        self.service.publish_ephemeral(
            conv, chat.Status(kind="thinking", state=state)
        )
        try:
            await self._stream(worker, conv, message, reply_id, request, answerer)
        finally:
            worker.reply_id, worker.stop = None, None

    async def _stream(
        self,
        worker: _Worker,
        conv: ConversationRef,
        message: PendingMessage,
        reply_id: str,
        request: AnswerRequest,
        answerer: Answerer,
    ) -> None:
        sent: list[str] = []
        first_at: list[float] = []

        async def write(batch: list[str]) -> None:
            try:
                await self.service.append_tokens(conv, reply_id, batch)
            except BotSilencedError:
                # A human took over (maybe in another process): stop generating now.
                worker.stop_reason = worker.stop_reason or "takeover"
                if worker.stop is not None:
                    worker.stop.set()
                raise
            if not first_at:
                first_at.append(time.monotonic())
                self.metrics.ttft.observe(first_at[0] - message.stored_at)
            sent.extend(batch)
            self.metrics.tokens.inc(len(batch))

        batcher = TokenBatcher(write, self.flush_interval_s)
        assert worker.stop is not None
        stop_wait = asyncio.create_task(worker.stop.wait())
        done: ReplyDone | None = None
        failed = False
        stream = answerer.answer(request).__aiter__()
        try:
            while batcher.error is None:
                step = asyncio.ensure_future(stream.__anext__())
                finished, _ = await asyncio.wait(
                    {step, stop_wait}, return_when=asyncio.FIRST_COMPLETED
                )
                if step not in finished:
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    break
                try:
                    event = step.result()
                except StopAsyncIteration:
                    break
                if isinstance(event, ReplyToken):
                    if event.text:
                        batcher.add(event.text)
                elif isinstance(event, ReplyDone):
                    done = event
                    break
        except Exception:
            log.exception("answerer failed in conversation %s", conv.public_id)
            failed = True
        finally:
            stop_wait.cancel()
            await _close_quietly(stream)
        try:
            await batcher.close()
        except BotSilencedError:
            worker.stop_reason = worker.stop_reason or "takeover"
        except ChatbotError:
            log.exception("storing tokens failed in conversation %s", conv.public_id)
            failed = True
        if isinstance(batcher.error, BotSilencedError):
            worker.stop_reason = worker.stop_reason or "takeover"
        await self._finish(conv, message, reply_id, done, sent, first_at, failed, worker)

    async def _finish(
        self,
        conv: ConversationRef,
        message: PendingMessage,
        reply_id: str,
        done: ReplyDone | None,
        sent: list[str],
        first_at: list[float],
        failed: bool,
        worker: _Worker,
    ) -> None:
        interrupted = done is None or failed or bool(worker.stop_reason)
        text = "".join(sent) if interrupted or done is None else done.text
        action = done.action if done is not None else None
        outcomes: list[dict[str, Any]] = []
        if self.action_outcomes is not None:
            # Proposals that ended while this reply was planned (the shopper moved on: the
            # open one was declined) or whose reply was cut short (the order may have
            # changed anyway): their outcomes are stored with this reply.
            try:
                outcomes = await self.action_outcomes(conv)
            except Exception:
                log.exception("reading the action outcomes of %s failed", conv.public_id)
        try:
            await self.service.finish_reply(
                conv,
                reply_id,
                text=text,
                in_reply_to=message.client_id,
                sources=() if interrupted or done is None else done.sources,
                handoff=bool(done and done.handoff and not interrupted),
                interrupted=interrupted,
                reason=(worker.stop_reason or ("failed" if failed else ""))
                if interrupted
                else (done.reason if done else ""),
                dialogue=done.state if done is not None and not interrupted else None,
                # An outcome (executed, declined ...) is stored even for an interrupted
                # reply: the order changed whatever happened to the words.
                action=action,
                outcomes=outcomes,
            )
        except BotSilencedError:
            # Taken over between the last token and done: close the reply as interrupted.
            interrupted = True
            await self.service.finish_reply(
                conv,
                reply_id,
                text="".join(sent),
                in_reply_to=message.client_id,
                interrupted=True,
                reason="takeover",
                action=action,
                outcomes=outcomes,
            )
        if done is not None:
            for check in done.guard_reasons:
                self.metrics.claims_removed.inc(1, check)
        outcome = "interrupted" if interrupted else "complete"
        self.metrics.replies.inc(1, worker.stop_reason or ("failed" if failed else outcome))
        now = time.monotonic()
        self.metrics.reply_seconds.observe(now - message.stored_at)
        if first_at and len(sent) > 1 and now > first_at[0]:
            self.metrics.tokens_per_second.observe((len(sent) - 1) / (now - first_at[0]))
        if failed:
            self._error(
                conv,
                ErrorCode.ANSWER_FAILED,
                "Sorry, something went wrong with this "
                "answer. Please try again or ask for a person.",
                message.client_id,
            )
        if done is not None and not interrupted:
            await self._after_done(conv, done, message.ip)

    async def _after_done(self, conv: ConversationRef, done: ReplyDone, ip: str = "") -> None:
        fresh = await self.service.get(conv.id)
        if done.verified_orders:
            await self.service.add_verified_orders(fresh, done.verified_orders, fresh.state)
        if done.handoff and done.reason in HANDOFF_REASONS and fresh.state == "bot":
            if ip and self.handoff_gate is not None and not self.handoff_gate(ip):
                log.info("automatic handoff skipped: waiting-conversation cap for the address")
                return
            try:
                # The note (who, which order, what they wanted) leads the console's
                # handoff summary.
                await self.service.transition(fresh, Action.REQUEST_HANDOFF,
                                              reason=done.handoff_note or "asked the bot")
            except ChatbotError as exc:  # e.g. an agent took over meanwhile
                log.info("automatic handoff skipped: %s", exc)


async def _close_quietly(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.debug("closing the answer stream raised", exc_info=True)
