"""The console socket (``/ws/agent``): authenticated agents watch inboxes and own conversations.

One :class:`AgentSocket` per connection. Frames are decoded by :mod:`chatbot.protocol.agent`;
every action is authorised server-side before it runs (a live session, access to the
conversation's store, and ownership where it matters), using the session token the socket
was opened with, so a logout, an expiry or a revoked store bites on the next frame. The
socket follows at most one store inbox and one open conversation through the hub, and
streams copilot suggestions from the same answering pipeline the bot uses.

The session token comes from the ``chatbot_console`` cookie on the upgrade request (the
browser console; its Origin must match the Host) or from an ``auth`` first frame (scripts,
tests). It is never read from the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from chatbot.agents.authz import Principal
from chatbot.agents.services import InboxService, TeamService
from chatbot.conversations.hub import HubItem, StoredEvent, Subscription
from chatbot.conversations.log import ConversationRef
from chatbot.conversations.models import AGENT
from chatbot.conversations.ownership import Action
from chatbot.errors import AuthError, ChatbotError, NotFoundError, ProtocolError
from chatbot.protocol import agent as proto
from chatbot.protocol import chat
from chatbot.protocol.common import CloseCode, ErrorCode
from chatbot.server import console_copilot
from chatbot.server.chat_socket import remote_ip
from chatbot.server.console_http import ConsoleHttp, agent_json, session_token
from chatbot.server.limits import FRAMES_BURST, FRAMES_PER_SECOND, TokenBucket
from chatbot.session.agent import AgentSession

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
_ACTIONS: dict[type[proto.ConversationAction], Action] = {
    proto.TakeOver: Action.TAKE_OVER,
    proto.HandBack: Action.HAND_BACK,
    proto.Resolve: Action.RESOLVE,
    proto.Reopen: Action.REOPEN,
}


def register(router: Router, app: ChatServer) -> None:
    """Add ``/ws/agent`` and the console's login/logout/session endpoints."""
    sockets: set[AgentSocket] = set()

    async def session_ended(token: str) -> None:
        """A logout in this process: close that session's sockets now."""
        for sock in [s for s in sockets if s.token == token]:
            await sock._refuse(ErrorCode.UNAUTHORIZED, "you logged out")

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
        self.headers = conn.request.headers if conn.request else None
        self.frames = TokenBucket(FRAMES_BURST, FRAMES_PER_SECOND)
        # Narrow services instead of running functions on the conversation service.
        self.inbox = InboxService(app.conversations.run)
        self.team = TeamService(app.conversations.run)
        # Who is signed in, the open conversation and the rules: no I/O, unit-tested.
        self.session = AgentSession()
        # The inbox being watched: store, filter, search, hub subscription, pump.
        self.inbox_store: tuple[int, str] | None = None
        self.inbox_filter = "open"
        self.inbox_q = ""
        self.inbox_sub: Subscription | None = None
        self.inbox_task: asyncio.Task[None] | None = None
        self.inbox_pending: set[int] = set()
        self.inbox_flush: asyncio.Task[None] | None = None
        # The open conversation's live events (the conversation itself: ``session.conv``).
        self.conv_sub: Subscription | None = None
        self.conv_task: asyncio.Task[None] | None = None
        self.suggestion: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        # The store whose approval queue this console shows (issue #19): (id, name).
        self.actions_store: tuple[int, str] | None = None
        self.actions_flush: asyncio.Task[None] | None = None

    @property
    def token(self) -> str | None:
        return self.session.token

    @property
    def principal(self) -> Principal | None:
        return self.session.principal

    @property
    def conv(self) -> ConversationRef | None:
        return self.session.conv

    # ---- the pump --------------------------------------------------------------------

    async def run(self) -> None:
        """Authenticate, then serve frames until the connection closes."""
        try:
            if not await self._authenticate():
                return
            self._spawn(self._watch_session())
            async for frame in self.conn:
                msg = await self._decode(frame)
                if msg is not None:
                    await self._dispatch(msg)
        except ConnectionClosed:
            pass
        finally:
            await self._teardown()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _teardown(self) -> None:
        for sub in (self.inbox_sub, self.conv_sub):
            if sub is not None:
                sub.close()
        pending = [
            t
            for t in (*self.tasks, self.suggestion, self.inbox_flush, self.inbox_task,
                      self.conv_task)
            if t is not None
        ]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                await task

    async def send(self, event: proto.ServerEvent) -> None:
        await self.conn.send(proto.encode(event))

    async def send_error(
        self, code: str, message: str, ref: str | None = None, conversation_id: str | None = None
    ) -> None:
        self.app.metrics.errors.inc(1, code)
        with contextlib.suppress(ConnectionClosed):
            await self.send(proto.Error(code, message, ref, conversation_id))

    async def _decode(self, frame: str | bytes) -> proto.ClientMessage | None:
        if not self.frames.allow():
            await self.send_error(ErrorCode.RATE_LIMITED, "too many frames; slow down")
            return None
        try:
            return proto.decode(frame)
        except ProtocolError as exc:
            await self.send_error(exc.code, exc.message)
            return None

    # ---- authentication --------------------------------------------------------------

    async def _authenticate(self) -> bool:
        token = session_token(self.headers) if self.headers is not None else None
        if token is not None and not self._same_origin():
            # A page on another site opened the socket with the agent's cookie.
            return await self._refuse(
                ErrorCode.FORBIDDEN, "cross-site console connections are refused"
            )
        if token is None:
            token = await self._auth_frame()
            if token is None:
                return await self._refuse(ErrorCode.UNAUTHORIZED, "log in first (send 'auth')")
        try:
            principal, stores = await self.team.sign_in(token)
        except AuthError as exc:
            return await self._refuse(exc.code, exc.message)
        self.session.signed_in(token, principal)
        await self.send(proto.Ready(agent=agent_json(principal), stores=stores))
        log.info("agent %s connected to the console from %s", principal.email, self.ip)
        return True

    def _same_origin(self) -> bool:
        assert self.headers is not None
        origin = self.headers.get("Origin")
        if origin is None:
            return True  # not a browser: cross-site pages always send Origin
        return urlsplit(origin).netloc.lower() == self.headers.get("Host", "").lower()

    async def _auth_frame(self) -> str | None:
        deadline = time.monotonic() + AUTH_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(self.conn.recv(), left)
            except TimeoutError:
                return None
            msg = await self._decode(frame)
            if isinstance(msg, proto.Auth):
                return msg.token
            if msg is not None:
                return None
        return None

    async def _refuse(self, code: str, message: str) -> bool:
        await self.send_error(code, message)
        with contextlib.suppress(ConnectionClosed):
            await self.conn.close(CloseCode.POLICY_VIOLATION, code)
        return False

    async def _authorize(self, store_id: int | None = None) -> Principal:
        """Re-check the session (and store access) for one action."""
        principal = await self.team.authorize(self.token, store_id)
        self.session.principal = principal
        return principal

    async def _watch_session(self) -> None:
        """Close the socket soon after the session ends, and stop following a store whose
        access was revoked, even while the agent is idle."""
        while True:
            await asyncio.sleep(SESSION_CHECK_S)
            if not await self._check_session():
                return

    async def _check_session(self) -> bool:
        """Re-check the session now: close the socket if it ended (False), drop what the
        agent may no longer see."""
        try:
            principal = await self._authorize()
        except AuthError as exc:
            await self._refuse(exc.code, exc.message)
            return False
        revoked = "you no longer have access to this store"
        store_id = self.inbox_store[0] if self.inbox_store is not None else None
        drop_inbox, closed = self.session.revoked(principal, store_id)
        if drop_inbox:
            self._stop_inbox()
            self.inbox_store = None
            await self.send_error(ErrorCode.FORBIDDEN, revoked, "subscribe_inbox")
        if closed is not None:
            self._close_conversation()
            await self.send_error(ErrorCode.FORBIDDEN, revoked, "open", closed)
        return True

    # ---- messages --------------------------------------------------------------------

    async def _dispatch(self, msg: proto.ClientMessage) -> None:
        ref, conversation_id = self.session.error_ref(msg)
        try:
            await self._handle(msg)
        except AuthError as exc:
            if self.session.ends_session(exc):
                await self._refuse(exc.code, exc.message)
            else:
                await self.send_error(exc.code, exc.message, ref, conversation_id)
        except ChatbotError as exc:
            await self.send_error(exc.code, exc.message, ref, conversation_id)
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("console action %s failed", type(msg).__name__)
            await self.send_error(ErrorCode.INTERNAL_ERROR, "something went wrong on our side", ref)

    async def _handle(self, msg: proto.ClientMessage) -> None:
        if isinstance(msg, proto.Auth):
            await self.send_error(ErrorCode.ALREADY_STARTED, "this connection is already signed in")
        elif isinstance(msg, proto.SubscribeInbox):
            await self._subscribe(msg)
        elif isinstance(msg, proto.Open):
            await self._open(await self._conversation(msg.conversation_id))
        elif isinstance(msg, proto.Close):
            if self.conv is not None and self.conv.public_id == msg.conversation_id:
                self._close_conversation()
        elif isinstance(msg, proto.TakeOver | proto.HandBack | proto.Resolve | proto.Reopen):
            await self._ownership(msg, _ACTIONS[type(msg)])
        elif isinstance(msg, proto.Send):
            await self._send_reply(msg)
        elif isinstance(msg, proto.Note):
            conv = await self._conversation(msg.conversation_id)
            assert self.principal is not None
            await self.app.conversations.add_agent_message(
                conv, msg.text, agent_id=self.principal.agent_id, agent_name=self.principal.name,
                internal=True,
            )
        elif isinstance(msg, proto.Suggest):
            conv = await self._conversation(msg.conversation_id)
            if self.suggestion is not None:
                self.suggestion.cancel()
            self.suggestion = asyncio.create_task(self._suggest(conv))
        elif isinstance(msg, proto.Typing):
            await self._typing(msg)
        elif isinstance(msg, proto.ListAgents | proto.AddAgent | proto.RemoveAgent
                        | proto.SetAgentStores):
            rows = await self.team.apply(self.token, msg)
            await self.send(proto.Agents(rows))
            if not isinstance(msg, proto.ListAgents):
                # A removed account's sessions are gone, a store may be revoked: every
                # console socket of this process re-checks now, not at its next timer.
                for peer in list(self.peers):
                    if peer is not self and peer.token is not None:
                        self._spawn(peer._check_session())
        elif isinstance(msg, proto.ListActions | proto.ApproveAction | proto.RejectAction
                        | proto.SetActionModes):
            await self._store_actions(msg)
        elif isinstance(msg, proto.ProposeAction | proto.ConfirmAction):
            await self._agent_action(msg)
        elif isinstance(msg, proto.MarkRead):
            conv = await self._conversation(msg.conversation_id)
            assert self.principal is not None
            await self.inbox.mark_read(self.principal.agent_id, conv.id)
            self._queue_row(conv.id)

    async def _conversation(self, public_id: str) -> ConversationRef:
        """A fresh snapshot of the conversation, after checking this agent may act on it."""
        conv = await self.inbox.conversation(public_id)
        try:
            await self._authorize(conv.store_id)
        except AuthError as exc:
            if exc.code != ErrorCode.FORBIDDEN:
                raise
            # Another store's conversation reads exactly like one that does not exist
            # (issue #18): agents cannot probe ids of stores they do not work in.
            raise NotFoundError(
                "no such conversation", code=ErrorCode.CONVERSATION_NOT_FOUND
            ) from None
        return conv

    async def _ownership(self, msg: proto.ConversationAction, action: Action) -> None:
        conv = await self._conversation(msg.conversation_id)
        principal = self.principal
        assert principal is not None
        if action is Action.HAND_BACK and conv.state == AGENT:
            self.session.check_hand_back(conv, await self.inbox.owner_id(conv.id))
        await self.app.conversations.transition(
            conv, action, agent_id=principal.agent_id, agent_name=principal.name
        )
        if action is Action.TAKE_OVER:
            # Also stop a reply this process runs for the conversation (belt and braces:
            # the service's hub cancel does it, and SQL refuses later bot writes anyway).
            self.app.replies.stop(conv.id, "takeover")

    async def _send_reply(self, msg: proto.Send) -> None:
        conv = await self._conversation(msg.conversation_id)
        principal = self.principal
        assert principal is not None
        self.session.check_reply(conv, await self.inbox.owner_id(conv.id))
        await self.app.conversations.add_agent_message(
            conv, msg.text, agent_id=principal.agent_id, agent_name=principal.name
        )

    async def _typing(self, msg: proto.Typing) -> None:
        conv = await self._conversation(msg.conversation_id)
        principal = self.principal
        assert principal is not None
        if not self.session.shows_typing(conv, await self.inbox.owner_id(conv.id)):
            return  # only the owner's typing is shown to the shopper; nothing to report
        self.app.conversations.publish_ephemeral(
            conv, chat.Status(kind="typing" if msg.active else "idle", agent=principal.name,
                              state=AGENT)
        )

    # ---- order actions (issue #19) -------------------------------------------------------

    async def _store_actions(
        self,
        msg: proto.ListActions | proto.ApproveAction | proto.RejectAction | proto.SetActionModes,
    ) -> None:
        store = await self.inbox.store(msg.store)
        if store is None:
            raise ChatbotError(f"no store {msg.store!r}", code=ErrorCode.UNKNOWN_STORE)
        principal = await self._authorize(store[0])
        desk = self.app.actions
        if isinstance(msg, proto.SetActionModes):
            self.session.check_configure_actions()
            await desk.set_modes(store[0], msg.modes, principal.email)
        elif isinstance(msg, proto.ApproveAction):
            await desk.approve(store[0], msg.action_id, principal.email)
        elif isinstance(msg, proto.RejectAction):
            await desk.reject(store[0], msg.action_id, principal.email, msg.reason)
        self.actions_store = store
        await self._send_actions()

    async def _send_actions(self) -> None:
        if self.actions_store is None or self.principal is None:
            return
        store_id, name = self.actions_store
        queue = await self.app.actions.queue(store_id)
        await self.send(proto.Actions(name, queue["pending"], queue["modes"],
                                      self.principal.is_admin))

    def _queue_actions(self) -> None:
        """An action event in the followed store: send the queue again (debounced)."""
        if self.actions_store is None:
            return
        if self.actions_flush is None or self.actions_flush.done():
            self.actions_flush = self._spawn(self._flush_actions())

    async def _flush_actions(self) -> None:
        await asyncio.sleep(INBOX_DEBOUNCE_S)
        await self._send_actions()

    async def _agent_action(self, msg: proto.ProposeAction | proto.ConfirmAction) -> None:
        conv = await self._conversation(msg.conversation_id)
        principal = self.principal
        assert principal is not None
        desk = self.app.actions
        if isinstance(msg, proto.ProposeAction):
            proposal = await desk.propose(conv, msg.kind, msg.params, principal.email)
            await self.send(proto.ActionPreview(conv.public_id, proposal.to_wire()))
            return
        outcome = await desk.answer(conv, msg.action_id, msg.accept, principal.email)
        await self.send(proto.ActionPreview(
            conv.public_id, {**outcome.to_event(), "details": outcome.details}
        ))

    # ---- inbox -----------------------------------------------------------------------

    async def _subscribe(self, msg: proto.SubscribeInbox) -> None:
        store = await self.inbox.store(msg.store)
        if store is None:
            raise ChatbotError(f"no store {msg.store!r}", code=ErrorCode.UNKNOWN_STORE)
        await self._authorize(store[0])
        self._stop_inbox()
        self.inbox_store, self.inbox_filter, self.inbox_q = store, msg.filter, msg.q
        self.inbox_pending.clear()
        # Subscribe before reading: a change committed in between arrives as an update.
        self.inbox_sub = sub = self.app.hub.subscribe_store(store[0])
        await self._send_snapshot()
        self.inbox_task = asyncio.create_task(self._pump_inbox(sub))

    async def _send_snapshot(self) -> None:
        if self.inbox_store is None or self.principal is None:
            return
        (store_id, store_name), kind, q = self.inbox_store, self.inbox_filter, self.inbox_q
        rows, counts = await self.inbox.snapshot(store_id, self.principal.agent_id, kind, q)
        await self.send(proto.Inbox(store_name, kind, q, rows, counts))

    def _stop_inbox(self) -> None:
        if self.inbox_sub is not None:
            self.inbox_sub.close()
        if self.inbox_task is not None and self.inbox_task is not asyncio.current_task():
            self.inbox_task.cancel()
        self.inbox_sub, self.inbox_task = None, None

    async def _pump_inbox(self, sub: Subscription) -> None:
        # With several server processes (an event poller is running) the hub only sees
        # this process's writes: refresh the whole inbox now and then as well.
        refresh = INBOX_REFRESH_S if getattr(self.app, "poller", None) is not None else None
        while True:
            try:
                item = await asyncio.wait_for(sub.get(), refresh)
            except TimeoutError:
                await self._send_snapshot()
                continue
            if sub.overflowed.is_set():
                # Fell behind: start over with a fresh snapshot (in a new task).
                if self.inbox_store is not None:
                    again = proto.SubscribeInbox(self.inbox_store[1], self.inbox_filter,
                                                 self.inbox_q)
                    self._spawn(self._dispatch(again))
                return
            if self.session.changes_inbox_row(item):
                self._queue_row(item.conversation_id)
            if (
                AgentSession.changes_action_queue(item) and self.actions_store is not None
                and self.actions_store[0] == item.store_id
            ):
                self._queue_actions()

    def _queue_row(self, conversation_id: int) -> None:
        if self.inbox_store is None:
            return
        self.inbox_pending.add(conversation_id)
        if self.inbox_flush is None or self.inbox_flush.done():
            self.inbox_flush = asyncio.create_task(self._flush_rows())

    async def _flush_rows(self) -> None:
        # Coalesce bursts (a reply's done + status + ack) into one update per row.
        await asyncio.sleep(INBOX_DEBOUNCE_S)
        if self.inbox_store is None or self.principal is None:
            return
        ids, self.inbox_pending = sorted(self.inbox_pending), set()
        store_id, store_name = self.inbox_store
        updates, counts = await self.inbox.updates(
            store_id, ids, self.principal.agent_id, self.inbox_filter, self.inbox_q
        )
        for row, matches in updates:
            await self.send(proto.InboxUpdate(store_name, row, matches, counts))

    # ---- the open conversation -------------------------------------------------------

    def _close_conversation(self) -> None:
        if self.conv_sub is not None:
            self.conv_sub.close()
        if self.conv_task is not None and self.conv_task is not asyncio.current_task():
            self.conv_task.cancel()
        self.conv_sub, self.conv_task = None, None
        self.session.close_conversation()

    async def _open(self, conv: ConversationRef) -> None:
        self._close_conversation()
        self.session.open(conv, 0)
        # Subscribe before reading the log; the replay's high-water mark drops duplicates.
        self.conv_sub = sub = self.app.hub.subscribe(conv.id)
        events, high = await self.app.conversations.replay(conv, 0, include_internal=True)
        details = await self.inbox.details(conv.id)
        # The customer panel lists the conversation's order actions (issue #19).
        details["customer"] = {**details["customer"],
                               "actions": await self.app.actions.of_conversation(conv)}
        fresh = await self.app.conversations.get(conv.id)
        self.session.delivered = high
        self.app.hub.seen(conv.id, high)  # an event-log poller resumes from here
        await self.send(
            proto.Conversation(
                conversation_id=conv.public_id,
                store=details["store"],
                state=fresh.state,
                seq=high,
                events=[_wire(e) for e in events],
                customer=details["customer"],
                owner=details["owner"],
                summary=details["summary"],
            )
        )
        self.conv_task = asyncio.create_task(self._pump_conversation(conv, sub))

    async def _pump_conversation(self, conv: ConversationRef, sub: Subscription) -> None:
        while True:
            item = await sub.get()
            if sub.overflowed.is_set():
                # Fell behind: send a fresh snapshot (in a new task).
                self._spawn(self._dispatch(proto.Open(conv.public_id)))
                return
            await self._forward(conv, item)

    async def _forward(self, conv: ConversationRef, item: HubItem) -> None:
        forward = self.session.forward(item)
        if forward is not None:
            owner = await self.inbox.owner(conv.id) if forward.with_owner else None
            await self.send(proto.Event(conv.public_id, forward.event, owner))

    # ---- copilot ---------------------------------------------------------------------

    async def _suggest(self, conv: ConversationRef) -> None:
        """Stream a copilot suggestion; failures become ``error`` frames (ref ``suggest``)."""
        answerer = self.app.answerer if self.app.is_ready() else None
        try:
            await console_copilot.suggest(self.app.conversations, answerer, conv, self.send)
        except (asyncio.CancelledError, ConnectionClosed):
            raise
        except ChatbotError as exc:
            await self.send_error(exc.code, exc.message, "suggest", conv.public_id)
        except Exception:
            log.exception("copilot failed for conversation %s", conv.public_id)
            await self.send_error(ErrorCode.ANSWER_FAILED, "the copilot could not suggest a reply",
                                  "suggest", conv.public_id)


def _wire(event: StoredEvent) -> dict[str, Any]:
    """A stored event in wire form; notes are flagged ``internal`` for the console."""
    return proto.conversation_event(event.kind, event.seq, event.payload, internal=event.internal)
