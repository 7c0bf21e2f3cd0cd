"""``ChatServer``: one ``websockets`` server on one port for sockets, health, metrics, files.

Plugging in (one line each, no edit here needed for the modules already listed):

- HTTP endpoints and extra sockets live in modules listed in ``ROUTE_MODULES``. Each
  defines ``register(router: Router, app: ChatServer) -> None`` and calls
  ``router.add(path, handler)``, ``router.add_prefix(prefix, handler)`` or
  ``router.add_socket(path, handler)`` (see :mod:`chatbot.server.http`). A listed module
  that cannot be imported fails start-up.
- Live conversation events: ``app.hub`` (:class:`~chatbot.conversations.hub.ConversationHub`),
  ``subscribe(conversation_id)`` / ``subscribe_store(store_id)``.
- Reads and writes (agent messages, notes, takeovers that stop the bot at once):
  ``app.conversations`` (:class:`~chatbot.conversations.service.ConversationService`).
- Per-IP connection caps: sockets registered here are counted in ``app.connections``.

Built-in routes: ``/ws/chat``, ``/healthz``, ``/readyz``, ``/metrics``, ``/widget.js``,
``/``, ``/demo``, ``/console``, ``/static/<file>`` (files of ``web_widget/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib
import importlib.resources
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from chatbot.conversations.hub import ConversationHub
from chatbot.conversations.poller import EventPoller
from chatbot.conversations.recovery import interrupt_orphaned_replies
from chatbot.conversations.service import ConversationService
from chatbot.protocol.common import CloseCode
from chatbot.security import counters as security_counters
from chatbot.server.actions import ActionDesk
from chatbot.server.chat_socket import ChatSocket, remote_ip
from chatbot.server.http import (
    HttpRequest,
    Router,
    file_response,
    make_request,
    malformed_headers,
    response,
    text_response,
)
from chatbot.server.limits import ConnectionLimiter, KeyedRateLimiter
from chatbot.server.metrics import CONTENT_TYPE, ServerMetrics
from chatbot.server.replies import ReplyManager
from chatbot.settings import Settings
from chatbot.storage.db import Database
from chatbot.types import Answerer

log = logging.getLogger(__name__)

# Modules that add routes: each has ``register(router, app)``; a missing one fails start-up.
ROUTE_MODULES: tuple[str, ...] = (
    "chatbot.server.storefront",  # storefront products API (widget helper)
    "chatbot.server.agent_socket",  # /ws/agent and console endpoints (console helper)
)
# With several processes on one database, a reply silent this long has no live writer.
ORPHAN_STALE_AFTER = timedelta(minutes=5)
# The widget, demo page and console: the ``web_widget`` package's data files, found where the
# package is installed (a wheel in site-packages or the source tree of an editable install).
STATIC_DIR = Path(str(importlib.resources.files("web_widget")))
# Candidate files for the page aliases, first existing wins.
PAGES: dict[str, tuple[str, ...]] = {
    "/": ("index.html", "demo.html", "storefront.html"),
    "/demo": ("demo.html", "index.html", "storefront.html"),
    "/console": ("console.html",),
}


class ChatServer:
    """The whole server: ``await start()`` returns the port, ``await stop()`` drains it."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        answerer: Answerer | None,
        *,
        static_dir: Path | None = None,
        route_modules: tuple[str, ...] = ROUTE_MODULES,
        flush_interval_s: float = 0.03,
        reply_grace_s: float = 15.0,
        poll_interval_s: float | None = None,
        group_commit: bool = True,
    ) -> None:
        self.settings = settings
        self.db = db
        self.answerer = answerer
        self.static_dir = static_dir or STATIC_DIR
        self.hub = ConversationHub()
        self.conversations = ConversationService(db, self.hub, group_commit=group_commit)
        # Order actions (issue #19): the shopper's confirm, the console's approval queue.
        self.actions = ActionDesk(self.conversations)
        self.metrics = ServerMetrics()
        limits = settings.limits
        self.connections = ConnectionLimiter(limits.max_connections, limits.max_connections_per_ip)
        self.ip_messages = KeyedRateLimiter(limits.messages_per_minute_per_ip)
        # Issue #18: every frame also spends from a per-address bucket, and an address may
        # create only so many waiting (handed-off) conversations an hour.
        self.ip_frames = KeyedRateLimiter(limits.frames_per_minute_per_ip)
        self.ip_waiting = KeyedRateLimiter(limits.waiting_per_ip_per_hour, period_s=3600.0)
        for metric in security_counters.ALL:
            self.metrics.registry.add(metric)
        self.replies = ReplyManager(
            self.conversations,
            self.hub,
            self.metrics,
            self._ready_answerer,
            max_queued=limits.max_queued_messages,
            flush_interval_s=flush_interval_s,
            grace_s=reply_grace_s,
            handoff_gate=self.handoff_allowed,
            action_outcomes=self.actions.untold_outcomes,
        )
        # Several processes on one database: poll the log of followed conversations.
        self.poller = EventPoller(db, self.hub, poll_interval_s) if poll_interval_s else None
        self._poll_task: asyncio.Task[None] | None = None
        # Proposals nobody answered become "expired", with their action event (issue #19).
        self._expiry_task: asyncio.Task[None] | None = None
        self._queue_task: asyncio.Task[None] | None = None
        self.router = Router()
        self.closing = False
        self.port: int | None = None
        self._server: Server | None = None
        self._chat_sockets: set[ChatSocket] = set()
        self._register_builtin_routes()
        for name in route_modules:
            self._register_module(name)

    # ---- readiness -------------------------------------------------------------------

    def set_answerer(self, answerer: Answerer | None) -> None:
        """Install (or replace) the answerer, e.g. once the model finished loading."""
        self.answerer = answerer

    def _ready_answerer(self) -> Answerer | None:
        return self.answerer if self.is_ready() else None

    def is_ready(self) -> bool:
        """The answerer exists and says it is ready (``ready`` attribute, default True)."""
        return self.answerer is not None and bool(getattr(self.answerer, "ready", True))

    # ---- routes ----------------------------------------------------------------------

    def _register_builtin_routes(self) -> None:
        r = self.router
        r.add_socket("/ws/chat", self._chat_socket)
        r.add("/healthz", lambda req: text_response(200, "ok\n"))
        r.add("/readyz", self._readyz)
        r.add("/metrics", self._metrics)
        r.add(
            "/widget.js", lambda req: file_response(self.static_dir, "widget.js", cross_origin=True)
        )
        r.add_prefix("/static/", self._static)
        r.add("/favicon.ico", lambda req: response(204, b"", "image/x-icon", cache="max-age=86400"))
        for path, candidates in PAGES.items():
            r.add(path, self._page(candidates))

    def _register_module(self, name: str) -> None:
        # A listed module that is missing or has no register() is a packaging or typing
        # mistake: fail at start-up (ModuleNotFoundError / TypeError), never serve without it.
        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if register is None:
            raise TypeError(f"route module {name} has no register(router, app)")
        register(self.router, self)

    def handoff_allowed(self, ip: str) -> bool:
        """Whether ``ip`` may create one more waiting conversation now (counts it)."""
        if self.ip_waiting.allow(ip):
            return True
        security_counters.WAITING_CAPPED.inc()
        return False

    def _readyz(self, req: HttpRequest) -> Response:
        if self.closing:
            return text_response(503, "shutting down\n")
        return text_response(200, "ready\n") if self.is_ready() else text_response(503, "loading\n")

    def _metrics(self, req: HttpRequest) -> Response:
        token = self.settings.metrics_token
        if token:
            # CHATBOT_METRICS_TOKEN set: only scrapers with the bearer token (issue #18).
            scheme, _, given = req.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                return text_response(401, "unauthorized\n",
                                     headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        self.metrics.connections.set(len(self._chat_sockets), "chat")
        return response(200, self.metrics.render().encode("utf-8"), CONTENT_TYPE)

    def _widget_js(self, req: HttpRequest) -> Response:
        return file_response(self.static_dir, "widget.js", cross_origin=True)

    def _static(self, req: HttpRequest) -> Response:
        name = req.path[len("/static/") :]
        if "/" in name or "\\" in name:
            # Only the top level of web_widget/ is public (not its tests/ folder).
            return text_response(404, "not found")
        return file_response(self.static_dir, name, cross_origin=name.endswith(".js"))

    def _page(self, candidates: tuple[str, ...]) -> Callable[[HttpRequest], Response]:
        def serve_page(req: HttpRequest) -> Response:
            for name in candidates:
                if (self.static_dir / name).is_file():
                    return file_response(self.static_dir, name)
            return text_response(404, "not found")

        return serve_page

    # ---- connections -----------------------------------------------------------------

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        ip = remote_ip(conn)
        problem = malformed_headers(request.headers)
        if problem is not None:
            # Malformed HTTP is a client error (400), never a crash of a handler (1011).
            return text_response(400, problem + "\n")
        if path in self.router.sockets:
            if self.closing:
                return text_response(503, "shutting down\n")
            reason = self.connections.check(ip)
            if reason is not None:
                self.metrics.rejected.inc(1, reason)
                return text_response(503 if reason == "server_full" else 429, reason + "\n")
            return None  # go on with the WebSocket handshake
        return await self.router.dispatch(
            make_request(request.path, request.headers, ip, getattr(request, "method", "GET"))
        )

    async def _handle(self, conn: ServerConnection) -> None:
        path = urlsplit(conn.request.path).path if conn.request else ""
        handler = self.router.sockets.get(path)
        if handler is None:
            await conn.close(CloseCode.POLICY_VIOLATION, "no such socket")
            return
        ip = remote_ip(conn)
        if self.connections.acquire(ip) is not None:
            # Lost a race with other upgrades between process_request and here.
            await conn.close(CloseCode.TRY_AGAIN_LATER, "too many connections")
            return
        label = path.rsplit("/", 1)[-1] or "root"
        self.metrics.connections_total.inc(1, label)
        self.metrics.connections.inc(1, label)
        try:
            await handler(conn)
        except Exception:
            log.exception("socket handler for %s crashed", path)
            with contextlib.suppress(Exception):
                await conn.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self.connections.release(ip)
            self.metrics.connections.dec(1, label)

    async def _chat_socket(self, conn: ServerConnection) -> None:
        sock = ChatSocket(self, conn, remote_ip(conn))
        self._chat_sockets.add(sock)
        try:
            await sock.run()
        finally:
            self._chat_sockets.discard(sock)

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Listen (``port`` 0 picks a free one) and return the port."""
        # Replies a killed process left "streaming" get their interrupted marker first,
        # so a resuming shopper never waits for a reply nobody is writing.
        await asyncio.to_thread(
            interrupt_orphaned_replies,
            self.db,
            stale_after=None if self.poller is None else ORPHAN_STALE_AFTER,
        )
        self._server = await serve(
            self._handle,
            host or self.settings.host,
            self.settings.port if port is None else port,
            process_request=self._process_request,
            max_size=self.settings.limits.max_frame_bytes,
            ping_interval=20,
            ping_timeout=20,
            server_header=None,
            # Frames are small JSON (a token is ~80 bytes): per-message deflate costs
            # more CPU per frame than it saves on the wire.
            compression=None,
        )
        if self.poller is not None:
            self._poll_task = asyncio.create_task(self.poller.run(), name="event-poller")
            # ... and the approval queues the consoles here follow (issue #19).
            self._queue_task = asyncio.create_task(
                self.actions.watch_queues(self.poller.interval_s), name="action-queues")
        self._expiry_task = asyncio.create_task(self.actions.run_expiry(), name="action-expiry")
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        log.info("chat server listening on %s:%d", host or self.settings.host, self.port)
        return self.port

    async def stop(self, drain_s: float = 5.0) -> None:
        """Graceful shutdown: stop accepting, finish or checkpoint replies, close with 1001."""
        if self._server is None or self.closing:
            return
        self.closing = True
        self._server.server.close()  # no new TCP connections
        await self.replies.shutdown(drain_s)
        # Let each socket send what the last replies produced before saying goodbye.
        for _ in range(100):
            if all(s.sub is None or s.sub.queue.empty() for s in self._chat_sockets):
                break
            await asyncio.sleep(0.02)
        for sock in list(self._chat_sockets):
            await sock.send_error("shutting_down", "the server is restarting; reconnect shortly")
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        for task in (self._poll_task, self._expiry_task, self._queue_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.conversations.close()
        log.info("chat server stopped")

    async def serve_forever(self) -> None:
        """Run until cancelled (``chatbot serve`` cancels on SIGTERM/SIGINT)."""
        assert self._server is not None
        await self._server.wait_closed()


__all__ = ["ChatServer", "ROUTE_MODULES", "Router"]
