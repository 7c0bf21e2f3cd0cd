"""The console socket (``/ws/agent``): a pump between one connection and its AgentSession.

Frames and the live items of the followed inbox and conversation go into
:class:`~chatbot.session.agent.AgentSession`, which decides everything (sign-in, the
authorisation of every action, ownership, replies, notes, the approval queue, what each
live item becomes) and is unit-tested without a socket. This pump writes the frames it says
to write, follows the hub, runs the timers (the auth deadline, the periodic session check,
the inbox debounce) and the copilot stream; every other effect goes to the connection's
narrow services (:class:`~chatbot.server.agent_services.AgentServices`).

The session token comes from the ``chatbot_console`` cookie on the upgrade request (the
browser console; its Origin must match the Host) or from an ``auth`` first frame (scripts,
tests). It is never read from the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from chatbot.conversations.hub import Subscription
from chatbot.conversations.log import ConversationRef
from chatbot.protocol import agent as proto
from chatbot.protocol.common import ErrorCode
from chatbot.server.agent_services import AgentServices
from chatbot.server.chat_socket import remote_ip
from chatbot.server.console_http import ConsoleHttp, session_token
from chatbot.server.pump import drive
from chatbot.session import agent_effects as ax
from chatbot.session.agent import AgentSession, Phase

if TYPE_CHECKING:
    from chatbot.server.app import ChatServer
    from chatbot.server.http import Router

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 10.0
# Sessions ended in this process (logout, team changes) close their sockets at once; this
# catches the rest (another process, the CLI, an expiry) within a few seconds (issue #18).
SESSION_CHECK_S = 5.0
INBOX_DEBOUNCE_S = 0.15
INBOX_REFRESH_S = 15.0  # full inbox refresh, only when several processes share the database

Steps = Generator[ax.AgentEffect, Any, None] | Iterable[ax.AgentEffect]


def register(router: Router, app: ChatServer) -> None:
    """Add ``/ws/agent`` and the console's login/logout/session endpoints."""
    sockets: set[AgentSocket] = set()

    async def session_ended(token: str) -> None:
        """A logout in this process: close that session's sockets now."""
        for sock in [s for s in sockets if s.token == token]:
            await sock.refuse(ErrorCode.UNAUTHORIZED, "you logged out")

    ConsoleHttp(app, on_logout=session_ended).register(router)

    async def handle(conn: ServerConnection) -> None:
        sock = AgentSocket(app, conn, sockets)
        sockets.add(sock)
        try:
            await sock.run()
        finally:
            sockets.discard(sock)

    router.add_socket("/ws/agent", handle)


class AgentSocket:
    """One console connection."""

    def __init__(self, app: ChatServer, conn: ServerConnection,
                 peers: set[AgentSocket] | None = None) -> None:
        self.app = app
        self.conn = conn
        self.peers = peers if peers is not None else set()  # every console socket here
        self.ip = remote_ip(conn)
        headers = conn.request.headers if conn.request else None
        self.cookie = session_token(headers) if headers is not None else None
        self.services = AgentServices(app)
        self.session = AgentSession(
            origin=headers.get("Origin") if headers is not None else None,
            host=headers.get("Host", "") if headers is not None else "",
        )
        self.inbox_sub: Subscription | None = None
        self.inbox_task: asyncio.Task[None] | None = None
        self.conv_sub: Subscription | None = None
        self.conv_task: asyncio.Task[None] | None = None
        self.suggestion: asyncio.Task[None] | None = None
        self.rows_flush: asyncio.Task[None] | None = None
        self.actions_flush: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def token(self) -> str | None:
        return self.session.token

    async def run(self) -> None:
        """Authenticate, then serve frames until the connection closes."""
        try:
            if not await self._authenticate():
                return
            assert self.session.principal is not None
            log.info("agent %s connected to the console from %s",
                     self.session.principal.email, self.ip)
            self._spawn(self._watch_session())
            async for frame in self.conn:
                await self._drive(self.session.receive_frame(frame))
        except ConnectionClosed:
            pass
        finally:
            await self._teardown()

    async def _authenticate(self) -> bool:
        await self._drive(self.session.start(self.cookie))
        deadline = time.monotonic() + AUTH_TIMEOUT_S
        while self.session.phase is Phase.AWAITING_AUTH:
            left = deadline - time.monotonic()
            try:
                frame = await asyncio.wait_for(self.conn.recv(), left) if left > 0 else None
            except TimeoutError:
                frame = None
            if frame is None:
                await self._drive(self.session.auth_timeout())
                break
            await self._drive(self.session.receive_frame(frame))
        return self.session.phase is Phase.READY

    async def _watch_session(self) -> None:
        """Close the socket soon after the session ends, and stop following a store whose
        access was revoked, even while the agent is idle."""
        while self.session.phase is Phase.READY:
            await asyncio.sleep(SESSION_CHECK_S)
            await self.check_session()

    async def check_session(self) -> None:
        await self._drive(self.session.check_session())

    async def refuse(self, code: str, message: str) -> None:
        await self._drive(self.session.refuse(code, message))

    # ---- effects ---------------------------------------------------------------------

    async def _drive(self, steps: Steps) -> None:
        await drive(steps, self._perform)

    async def _perform(self, effect: ax.AgentEffect) -> Any:  # noqa: C901 (one case each)
        match effect:
            case ax.Send(frame, None):
                await self.conn.send(frame)
            case ax.Send(frame, str(code)):
                self.app.metrics.errors.inc(1, code)
                with contextlib.suppress(ConnectionClosed):
                    await self.conn.send(frame)
            case ax.Close(code, reason):
                with contextlib.suppress(ConnectionClosed):
                    await self.conn.close(code, reason)
            case ax.FollowInbox(store_id):
                self.inbox_sub = self.app.hub.subscribe_store(store_id)  # queued until started
            case ax.StartInboxPump():
                assert self.inbox_sub is not None
                self.inbox_task = asyncio.create_task(self._pump_inbox(self.inbox_sub))
            case ax.StopInbox():
                self.inbox_sub, self.inbox_task = self._stop(self.inbox_sub, self.inbox_task)
            case ax.FollowConversation(conv):
                self.conv_sub = self.app.hub.subscribe(conv.id)
            case ax.StartConversationPump():
                assert self.conv_sub is not None
                self.conv_task = asyncio.create_task(self._pump_conversation(self.conv_sub))
            case ax.StopConversation():
                self.conv_sub, self.conv_task = self._stop(self.conv_sub, self.conv_task)
            case ax.FlushRows() if self.rows_flush is None or self.rows_flush.done():
                self.rows_flush = asyncio.create_task(self._soon(self.session.flush_rows))
            case ax.FlushActions() if self.actions_flush is None or self.actions_flush.done():
                self.actions_flush = self._spawn(self._soon(self.session.send_actions))
            case ax.FlushRows() | ax.FlushActions():
                pass  # a flush is due already: it sends the latest state
            case ax.StartSuggestion(conv):
                if self.suggestion is not None:
                    self.suggestion.cancel()
                self.suggestion = asyncio.create_task(self._suggest(conv))
            case ax.RecheckPeers():
                for peer in list(self.peers):
                    if peer is not self and peer.token is not None:
                        self._spawn(peer.check_session())
            case _:
                return await self.services.perform(effect)
        return None

    # ---- tasks -----------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    @staticmethod
    def _stop(sub: Subscription | None, task: asyncio.Task[None] | None) -> tuple[None, None]:
        if sub is not None:
            sub.close()
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        return None, None

    async def _soon(self, steps: Callable[[], Steps]) -> None:
        # Coalesce bursts (a reply's done + status + ack) into one update per row.
        await asyncio.sleep(INBOX_DEBOUNCE_S)
        await self._drive(steps())

    async def _pump_inbox(self, sub: Subscription) -> None:
        # With several server processes (an event poller is running) the hub only sees
        # this process's writes: refresh the whole inbox now and then as well.
        refresh = INBOX_REFRESH_S if self.app.poller is not None else None
        while True:
            try:
                item = await asyncio.wait_for(sub.get(), refresh)
            except TimeoutError:
                await self._drive(self.session.inbox_snapshot())
                continue
            if sub.overflowed.is_set():
                # Fell behind: start over with a fresh snapshot (in a new task).
                self._spawn(self._drive(self.session.inbox_fell_behind()))
                return
            await self._drive(self.session.inbox_item(item))

    async def _pump_conversation(self, sub: Subscription) -> None:
        while True:
            item = await sub.get()
            if sub.overflowed.is_set():
                # Fell behind: send a fresh snapshot (in a new task).
                self._spawn(self._drive(self.session.conversation_fell_behind()))
                return
            await self._drive(self.session.conversation_item(item))

    async def _suggest(self, conv: ConversationRef) -> None:
        """Stream a copilot suggestion; failures become ``error`` frames (ref ``suggest``)."""

        async def send(event: proto.ServerEvent) -> None:
            await self.conn.send(proto.encode(event))

        try:
            await self.services.suggest(conv, send)
        except (asyncio.CancelledError, ConnectionClosed):
            raise
        except Exception as exc:
            await self._drive(self.session.suggestion_failed(conv, exc))

    async def _teardown(self) -> None:
        for sub in (self.inbox_sub, self.conv_sub):
            if sub is not None:
                sub.close()
        pending = [
            t
            for t in (*self.tasks, self.suggestion, self.rows_flush, self.inbox_task,
                      self.conv_task)
            if t is not None
        ]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                await task
