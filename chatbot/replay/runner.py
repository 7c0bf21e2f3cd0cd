"""Replaying transcripts over the real sockets and checking every reply.

For each transcript the runner opens ``/ws/chat`` like the widget (``hello`` with the
store and, for a signed-in customer, an identity token signed with the store's secret),
sends each shopper turn, collects the streamed reply up to its ``done`` (text, sources,
handoff, time to first token) and checks the turn's expectations. Agent steps go over
``/ws/agent`` as the runner's test agent, and are confirmed by what the shopper's socket
sees (``agent_joined``, the agent's message, ``agent_left``). Every frame is encoded and
decoded by :mod:`chatbot.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from chatbot import identity
from chatbot.errors import ChatbotError, ProtocolError
from chatbot.protocol import agent as agent_proto
from chatbot.protocol import chat
from chatbot.replay.checks import Check, Evidence, Reply, SourceSeen, check_reply
from chatbot.replay.environment import Target
from chatbot.replay.format import AgentStep, ShopperTurn, Step, Transcript

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 120.0
# How long the bot must stay quiet for ``no_reply`` to pass.
SILENCE_S = 2.0
AGENT_TIMEOUT_S = 15.0


@dataclass
class StepResult:
    """One step of a transcript: what happened and the checks on it."""

    index: int
    step: Step
    checks: list[Check] = field(default_factory=list)
    reply: Reply | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass
class TranscriptResult:
    """The outcome of replaying one transcript."""

    transcript: Transcript
    steps: list[StepResult] = field(default_factory=list)
    conversation_id: str | None = None
    seconds: float = 0.0
    # A problem that stopped the replay (cannot connect, unknown store, identity refused).
    error: str | None = None
    skipped: bool = False

    @property
    def passed(self) -> bool:
        return self.error is None and all(s.passed for s in self.steps)

    @property
    def outcome(self) -> str:
        """passed | failed | xfailed | xpassed | skipped"""
        if self.skipped:
            return "skipped"
        if self.transcript.xfail:
            return "xpassed" if self.passed else "xfailed"
        return "passed" if self.passed else "failed"

    @property
    def ok(self) -> bool:
        """Not a failure: passed, skipped, or failed as its ``xfail`` says."""
        return self.outcome != "failed"


class _Socket:
    """A websocket with a reader task that keeps every decoded frame and its arrival time."""

    def __init__(self, ws: ClientConnection, decode: Callable[[str | bytes], Any]) -> None:
        self.ws = ws
        self.decode = decode
        self.events: list[tuple[float, Any]] = []
        self.closed: str | None = None
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                try:
                    event = self.decode(frame)
                except ProtocolError as exc:
                    log.warning("undecodable frame from the server: %s", exc)
                    continue
                self.events.append((time.monotonic(), event))
                self._changed.set()
        except ConnectionClosed as exc:
            self.closed = f"connection closed ({exc.rcvd.code if exc.rcvd else 'no code'})"
        finally:
            self.closed = self.closed or "connection closed"
            self._changed.set()

    async def send(self, frame: str) -> None:
        await self.ws.send(frame)

    async def wait_for(self, pred: Callable[[Any], bool], start: int, timeout: float) -> Any:
        """The first event at index >= ``start`` matching ``pred``; None on timeout/close."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for _, event in self.events[seen:]:
                if pred(event):
                    return event
            seen = len(self.events)
            if self.closed is not None:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


class Replayer:
    """Replays transcripts against one target."""

    def __init__(
        self,
        target: Target,
        *,
        evidence: Evidence | None = None,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        silence_s: float = SILENCE_S,
    ) -> None:
        self.target = target
        self.evidence = evidence
        self.reply_timeout_s = reply_timeout_s
        self.silence_s = silence_s

    async def run_all(
        self,
        transcripts: Sequence[Transcript],
        *,
        concurrency: int = 1,
        on_result: Callable[[TranscriptResult], None] | None = None,
    ) -> list[TranscriptResult]:
        """Replay ``transcripts`` (``concurrency`` at a time), results in input order."""
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(t: Transcript) -> TranscriptResult:
            async with gate:
                result = await self.run(t)
            if on_result is not None:
                on_result(result)
            return result

        return list(await asyncio.gather(*(one(t) for t in transcripts)))

    async def run(self, t: Transcript) -> TranscriptResult:
        """Replay one transcript; never raises for a server or transcript problem."""
        result = TranscriptResult(t)
        if t.skip:
            result.skipped = True
            return result
        started = time.monotonic()
        shopper: _Socket | None = None
        agent: _Socket | None = None
        try:
            shopper = await self._open_chat(t, result)
            shopper_texts: list[str] = []
            for index, step in enumerate(t.steps):
                if isinstance(step, ShopperTurn):
                    shopper_texts.append(step.text)
                    outcome = await self._shopper_turn(t, index, step, shopper, shopper_texts)
                else:
                    if agent is None:
                        agent = await self._open_agent()
                    outcome = await self._agent_step(index, step, shopper, agent, result)
                result.steps.append(outcome)
                if shopper.closed is not None and index + 1 < len(t.steps):
                    result.error = f"the server closed the chat socket: {shopper.closed}"
                    break
        except (ChatbotError, OSError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            for sock in (agent, shopper):
                if sock is not None:
                    await sock.close()
            result.seconds = time.monotonic() - started
        return result

    # ---- sockets -----------------------------------------------------------------------

    async def _open_chat(self, t: Transcript, result: TranscriptResult) -> _Socket:
        token = None
        if t.customer:
            token = identity.sign(self.target.store_secret(t.store.name), t.customer)
        ws = await connect(self.target.chat_url, max_size=2**22, open_timeout=30)
        sock = _Socket(ws, chat.decode_event)
        await sock.send(chat.encode_client(chat.Hello(store=t.store.name, identity=token)))
        welcome = await sock.wait_for(lambda e: isinstance(e, chat.Welcome), 0, 30)
        if welcome is None:
            errors = [e for _, e in sock.events if isinstance(e, chat.Error)]
            why = f"{errors[0].code}: {errors[0].message}" if errors else sock.closed or "timeout"
            await sock.close()
            raise ChatbotError(f"no welcome from the server ({why})", code="replay_failed")
        result.conversation_id = welcome.conversation_id
        if t.customer and not (welcome.customer or {}).get("verified"):
            refusals = [e.message for _, e in sock.events if isinstance(e, chat.Error)]
            await sock.close()
            raise ChatbotError(
                f"the server did not accept the identity of customer {t.customer!r} "
                f"({'; '.join(refusals) or 'not verified'})",
                code="replay_failed",
            )
        return sock

    async def _open_agent(self) -> _Socket:
        if not self.target.agent_token:
            raise ChatbotError(
                "agent steps need an agent session: replay in-process, or pass "
                "--agent-email and --agent-password-file",
                code="replay_failed",
            )
        ws = await connect(self.target.agent_url, max_size=2**22, open_timeout=30)
        sock = _Socket(ws, agent_proto.decode_event)
        await sock.send(agent_proto.encode_client(agent_proto.Auth(self.target.agent_token)))
        ready = await sock.wait_for(
            lambda e: isinstance(e, agent_proto.Ready | agent_proto.Error), 0, AGENT_TIMEOUT_S
        )
        if not isinstance(ready, agent_proto.Ready):
            why = f"{ready.code}: {ready.message}" if ready is not None else sock.closed
            await sock.close()
            raise ChatbotError(f"the console refused the test agent ({why})",
                               code="replay_failed")
        return sock

    # ---- steps -------------------------------------------------------------------------

    async def _shopper_turn(
        self, t: Transcript, index: int, turn: ShopperTurn, sock: _Socket, texts: list[str]
    ) -> StepResult:
        msg_id = f"t{index + 1}-{uuid.uuid4().hex[:8]}"
        mark = len(sock.events)
        sent_at = time.monotonic()
        await sock.send(chat.encode_client(chat.Message(id=msg_id, text=turn.text)))
        reply = (
            await self._silence(sock, msg_id, mark)
            if turn.expect.no_reply
            else await self._reply(sock, msg_id, mark, sent_at)
        )
        checks = check_reply(
            turn.expect, reply, store=t.store.name, evidence=self.evidence, shopper_texts=texts
        )
        return StepResult(index, turn, checks, reply)

    async def _reply(self, sock: _Socket, msg_id: str, mark: int, sent_at: float) -> Reply:
        def ends(e: Any) -> bool:
            return (isinstance(e, chat.Done) and e.in_reply_to == msg_id) or (
                isinstance(e, chat.Error) and e.ref == msg_id
            )

        end = await sock.wait_for(ends, mark, self.reply_timeout_s)
        if isinstance(end, chat.Error):
            return Reply(error=f"{end.code}: {end.message}")
        if not isinstance(end, chat.Done):
            why = sock.closed or f"no reply within {self.reply_timeout_s:.0f}s"
            return Reply(silent=True, error=why)
        first = next(
            (at for at, e in sock.events[mark:]
             if isinstance(e, chat.Token) and e.reply_id == end.reply_id),
            None,
        )
        done_at = next(at for at, e in sock.events[mark:] if e is end)
        return Reply(
            text=end.text,
            sources=[SourceSeen(s.kind, s.id, s.title) for s in end.sources],
            handoff=end.handoff,
            interrupted=end.interrupted,
            ttft_ms=(first - sent_at) * 1000 if first is not None else None,
            total_ms=(done_at - sent_at) * 1000,
        )

    async def _silence(self, sock: _Socket, msg_id: str, mark: int) -> Reply:
        acked = await sock.wait_for(
            lambda e: isinstance(e, chat.Ack) and e.id == msg_id, mark, AGENT_TIMEOUT_S
        )
        if acked is None:
            return Reply(error="the message was not acknowledged")
        spoke = await sock.wait_for(
            lambda e: isinstance(e, chat.Token | chat.Done), mark, self.silence_s
        )
        if spoke is None:
            return Reply(silent=True)
        done = await sock.wait_for(
            lambda e: isinstance(e, chat.Done) and e.in_reply_to == msg_id, mark, 30
        )
        return Reply(text=done.text if done is not None else getattr(spoke, "text", ""))

    async def _agent_step(
        self, index: int, step: AgentStep, shopper: _Socket, agent: _Socket,
        result: TranscriptResult,
    ) -> StepResult:
        conv = result.conversation_id or ""
        mark, agent_mark = len(shopper.events), len(agent.events)
        if step.action == "send":
            msg: Any = agent_proto.Send(conv, f"a{index + 1}-{uuid.uuid4().hex[:8]}", step.text)
            want = f"agent_message {step.text!r}"

            def seen(e: Any) -> bool:
                return isinstance(e, chat.AgentMessage) and e.text == step.text
        else:
            state = {"take_over": "agent", "hand_back": "bot", "resolve": "resolved"}[step.action]
            msg = {
                "take_over": agent_proto.TakeOver,
                "hand_back": agent_proto.HandBack,
                "resolve": agent_proto.Resolve,
            }[step.action](conv)
            want = f"status with state {state!r}"

            def seen(e: Any) -> bool:
                return isinstance(e, chat.Status) and e.state == state

        await agent.send(agent_proto.encode_client(msg))
        got = await shopper.wait_for(seen, mark, AGENT_TIMEOUT_S)
        if got is not None:
            actual, ok = _describe(got), True
        else:
            errors = [e for _, e in agent.events[agent_mark:] if isinstance(e, agent_proto.Error)]
            actual = (
                f"console error {errors[0].code}: {errors[0].message}"
                if errors else f"nothing within {AGENT_TIMEOUT_S:.0f}s"
            )
            ok = False
        return StepResult(index, step, [Check(f"agent {step.action}", want, actual, ok)])


def _describe(event: Any) -> str:
    if isinstance(event, chat.Status):
        return f"status {event.kind} (state {event.state})"
    if isinstance(event, chat.AgentMessage):
        return f"agent_message {event.text!r} from {event.agent}"
    return type(event).__name__
