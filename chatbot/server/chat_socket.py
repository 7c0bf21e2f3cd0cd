"""The shopper socket (``/ws/chat``): a pump between one connection and its ChatSession.

Frames go into :class:`~chatbot.session.chat.ChatSession`, which decides everything (hello,
resume, identity, limits, messages, handoff) and is unit-tested without a socket. This
pump writes the frames it says to write and follows the hub; every other effect goes to
the connection's narrow services (:class:`~chatbot.server.chat_services.ChatServices`).
Nothing a client sends can take the connection (or the server) down.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from chatbot.conversations.hub import Subscription
from chatbot.conversations.log import ConversationRef
from chatbot.conversations.models import new_public_id
from chatbot.conversations.service import new_resume_token
from chatbot.server.chat_services import ChatServices
from chatbot.server.pump import drive
from chatbot.session import effects as fx
from chatbot.session.chat import ChatSession, Phase

if TYPE_CHECKING:
    from chatbot.server.app import ChatServer

HELLO_TIMEOUT_S = 10.0


class ChatSocket:
    """One shopper connection."""

    def __init__(self, app: ChatServer, conn: ServerConnection, ip: str) -> None:
        self.app = app
        self.conn = conn
        self.ip = ip
        self.services = ChatServices(app, ip)
        self.session = ChatSession(
            origin=conn.request.headers.get("Origin") if conn.request else None,
            max_message_chars=app.settings.limits.max_message_chars,
            new_conversation_id=lambda: new_public_id("c"),
            new_resume_token=new_resume_token,
        )
        self.sub: Subscription | None = None
        self.pump: asyncio.Task[None] | None = None
        self.last_frame_at = time.monotonic()

    @property
    def conv(self) -> ConversationRef | None:
        return self.session.conv

    async def run(self) -> None:
        """Serve the connection until it closes."""
        try:
            if await self._await_hello():
                await self._read_loop()
        except ConnectionClosed:
            pass
        finally:
            if self.pump is not None:
                self.pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await self.pump
            if self.sub is not None:
                self.sub.close()
            if self.conv is not None:
                self.app.replies.connection_left(self.conv.id)

    async def _recv(self, timeout: float) -> str | bytes | None:
        try:
            return await asyncio.wait_for(self.conn.recv(), timeout)
        except TimeoutError:
            return None

    async def _await_hello(self) -> bool:
        deadline = time.monotonic() + HELLO_TIMEOUT_S
        while self.session.phase is Phase.AWAITING_HELLO:
            left = deadline - time.monotonic()
            frame = await self._recv(left) if left > 0 else None
            if frame is None:
                await self._drive(self.session.hello_timeout())
                break
            await self._drive(self.session.receive_frame(frame))
        return self.session.phase is Phase.OPEN

    async def _read_loop(self) -> None:
        idle = self.app.settings.limits.idle_timeout_s
        while self.session.phase is Phase.OPEN and (self.pump is None or not self.pump.done()):
            frame = await self._recv(max(0.0, self.last_frame_at + idle - time.monotonic()))
            if frame is None:
                await self._drive(self.session.idle_timeout())
                return
            self.last_frame_at = time.monotonic()
            await self._drive(self.session.receive_frame(frame))

    async def _pump_events(self) -> None:
        """Forward the conversation's hub items to this socket, in seq order, once each."""
        assert self.sub is not None
        while True:
            item = await self.sub.get()
            await self._drive(self.session.forward(item))
            if self.sub.overflowed.is_set():
                # We fell behind and items were dropped: make the client resume from the log.
                await self._drive(self.session.fell_behind())
                return

    async def send_error(self, code: str, message: str, ref: str | None = None) -> None:
        await self._perform(self.session.error(code, message, ref))

    async def _drive(self, steps: Generator[fx.Effect, Any, None] | Iterable[fx.Effect]) -> None:
        await drive(steps, self._perform)

    async def _perform(self, effect: fx.Effect) -> Any:
        match effect:
            case fx.Send(frame, None):
                await self.conn.send(frame)
            case fx.Send(frame, str(code)):
                self.app.metrics.errors.inc(1, code)
                with contextlib.suppress(ConnectionClosed):
                    await self.conn.send(frame)
            case fx.Close(code, reason):
                await self.conn.close(code, reason)
            case fx.Follow(conv):
                self.sub = self.app.hub.subscribe(conv.id)  # items wait until the pump starts
            case fx.StartPump():
                self.pump = asyncio.create_task(self._pump_events())
            case _:
                return await self.services.perform(effect)
        return None


def remote_ip(conn: Any) -> str:
    """The peer's IP address (proxies are not trusted: no X-Forwarded-For)."""
    address = getattr(conn, "remote_address", None)
    if isinstance(address, tuple) and address:
        return str(address[0])
    return "unknown"
