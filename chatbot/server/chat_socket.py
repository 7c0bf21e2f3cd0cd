"""The shopper socket (``/ws/chat``): frames in through the protocol, events out from the hub.

One :class:`ChatSocket` per connection. It decodes frames with :mod:`chatbot.protocol.chat`,
hands the typed messages to the conversation service and the reply manager, and forwards
the conversation's events from the hub to the socket. Library errors become ``error``
events here, at the edge; nothing a client sends can take the connection (or the
server) down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from chatbot import identity
from chatbot.conversations.hub import HubItem, Subscription
from chatbot.conversations.log import ConversationRef
from chatbot.conversations.models import new_public_id
from chatbot.conversations.ownership import Action
from chatbot.conversations.service import new_resume_token
from chatbot.errors import ChatbotError, ConflictError, IdentityError, NotFoundError, ProtocolError
from chatbot.protocol import chat
from chatbot.protocol.common import CloseCode, ErrorCode
from chatbot.server.limits import FRAMES_BURST, FRAMES_PER_SECOND, TokenBucket, per_minute
from chatbot.server.replies import PendingMessage
from chatbot.server.store_lookup import StoreInfo, find_customer, find_store_info
from chatbot.session.chat import CONFIRM_TEXT, confirm_message_id

if TYPE_CHECKING:
    from chatbot.server.app import ChatServer

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
_PUBLIC_ID = re.compile(r"c_[A-Za-z0-9_-]{16}")
_TOKEN = re.compile(r"r_[A-Za-z0-9_-]{32}")


class ChatSocket:
    """One shopper connection."""

    def __init__(self, app: ChatServer, conn: ServerConnection, ip: str) -> None:
        self.app = app
        self.conn = conn
        self.ip = ip
        self.origin = conn.request.headers.get("Origin") if conn.request else None
        limits = app.settings.limits
        self.message_bucket = per_minute(limits.messages_per_minute_per_connection)
        self.frame_bucket = TokenBucket(FRAMES_BURST, FRAMES_PER_SECOND)
        self.conv: ConversationRef | None = None
        # A conversation announced in ``welcome`` but not stored yet: (public id, resume
        # token). It is stored on the first thing worth keeping (a message, a handoff),
        # so page views that never chat leave no rows and no empty inbox entries.
        self.unsaved: tuple[str, str | None] | None = None
        self.customer_id: int | None = None
        self.store: StoreInfo | None = None
        self.sub: Subscription | None = None
        self.pump: asyncio.Task[None] | None = None
        self.delivered = 0  # highest stored seq sent to this client
        self.last_frame_at = time.monotonic()

    # ---- the pump --------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes."""
        try:
            if not await self._await_hello():
                return
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
        while (left := deadline - time.monotonic()) > 0:
            frame = await self._recv(left)
            if frame is None:
                break
            msg = await self._decode(frame)
            if msg is None:
                continue
            if not isinstance(msg, chat.Hello):
                await self.send_error(ErrorCode.HELLO_REQUIRED, "send 'hello' first")
                continue
            return await self._on_hello(msg)
        await self.send_error(ErrorCode.HELLO_REQUIRED, "no 'hello' received in time")
        await self.conn.close(CloseCode.POLICY_VIOLATION, "hello timeout")
        return False

    async def _read_loop(self) -> None:
        idle = self.app.settings.limits.idle_timeout_s
        while self.pump is None or not self.pump.done():
            frame = await self._recv(max(0.0, self.last_frame_at + idle - time.monotonic()))
            if frame is None:
                await self.send_error(ErrorCode.IDLE_TIMEOUT, "closed after a long silence")
                await self.conn.close(CloseCode.GOING_AWAY, "idle timeout")
                return
            self.last_frame_at = time.monotonic()
            msg = await self._decode(frame)
            if msg is not None:
                await self._dispatch(msg)

    async def _pump_events(self) -> None:
        """Forward the conversation's hub items to this socket, in seq order, once each."""
        assert self.sub is not None
        while True:
            item = await self.sub.get()
            await self._forward(item)
            if self.sub.overflowed.is_set():
                # We fell behind and items were dropped: make the client resume from the log.
                await self.conn.close(CloseCode.TRY_AGAIN_LATER, "too slow; resume with last_seq")
                return

    async def _forward(self, item: HubItem) -> None:
        if item.stored is not None:
            event = item.stored
            if event.internal or event.seq <= self.delivered:
                return
            self.delivered = event.seq
            await self.conn.send(chat.encode_logged(event.kind, event.seq, event.payload))
        elif item.ephemeral is not None and item.audience != "agents":
            fields = dict(item.ephemeral)
            kind = fields.pop("type")
            if kind == "error":
                self.app.metrics.errors.inc(1, fields.get("code", ""))
            await self.conn.send(chat.encode_logged(kind, self.delivered, fields))

    async def send_error(self, code: str, message: str, ref: str | None = None) -> None:
        self.app.metrics.errors.inc(1, code)
        frame = chat.encode(chat.Error(seq=self.delivered, code=code, message=message, ref=ref))
        with contextlib.suppress(ConnectionClosed):
            await self.conn.send(frame)

    async def _decode(self, frame: str | bytes) -> chat.ClientMessage | None:
        # Every frame spends from this connection's and this address's frame buckets.
        if not self.frame_bucket.allow() or not self.app.ip_frames.allow(self.ip):
            await self.send_error(ErrorCode.RATE_LIMITED, "too many frames; slow down")
            return None
        try:
            return chat.decode(frame)
        except ProtocolError as exc:
            await self.send_error(exc.code, exc.message)
            return None

    # ---- hello ------------------------------------------------------------------------

    async def _on_hello(self, hello: chat.Hello) -> bool:
        service = self.app.conversations
        store = await service.run(find_store_info, hello.store)
        if store is None:
            await self.send_error(ErrorCode.UNKNOWN_STORE, f"no store with key {hello.store!r}")
            await self.conn.close(CloseCode.POLICY_VIOLATION, "unknown store")
            return False
        if store.allowed_origins and self.origin not in store.allowed_origins:
            await self.send_error(ErrorCode.ORIGIN_NOT_ALLOWED, "this page may not open the chat")
            await self.conn.close(CloseCode.POLICY_VIOLATION, "origin not allowed")
            return False
        self.store = store
        customer_id, name = await self._verify_identity(store, hello.identity)
        self.customer_id = customer_id
        conv, resume_token, resumed = None, None, False
        if hello.conversation_id and not hello.new_conversation:
            conv = await service.find_for_resume(
                store.id, hello.conversation_id, customer_id, hello.resume_token
            )
            resumed = conv is not None
            if conv is not None:
                resume_token = hello.resume_token if conv.customer_id is None else None
            elif await self._adoptable(hello, customer_id):
                # Announced earlier but never stored (no message yet): keep its id.
                resume_token = hello.resume_token if customer_id is None else None
                self.unsaved, resumed = (hello.conversation_id, resume_token), True
            else:
                await self.send_error(
                    ErrorCode.CONVERSATION_NOT_FOUND,
                    "that conversation cannot be resumed here; starting a new one",
                )
        if conv is None and self.unsaved is None:
            resume_token = None if customer_id is not None else new_resume_token()
            self.unsaved = (new_public_id("c"), resume_token)
        events: list[Any] = []
        high = 0
        if conv is not None:
            # Subscribe before reading the log: whatever commits in between arrives live
            # and is dropped by seq if the replay already had it.
            self._follow(conv)
            events, high = await service.replay(conv, hello.last_seq or 0)
            self.delivered = high
            self.app.hub.seen(conv.id, high)
        welcome = chat.Welcome(
            seq=high,
            conversation_id=conv.public_id if conv else self.unsaved[0],  # type: ignore[index]
            state=conv.state if conv else "bot",
            resumed=resumed,
            events=[chat.logged(e.kind, e.seq, e.payload) for e in events],
            resume_token=resume_token,
            customer={"verified": customer_id is not None, "name": name},
            max_message_chars=self.app.settings.limits.max_message_chars,
        )
        await self.conn.send(chat.encode(welcome))
        if conv is not None:
            self._start_pump()  # only after welcome: live events follow it, never precede it
        return True

    async def _adoptable(self, hello: chat.Hello, customer_id: int | None) -> bool:
        """A well-formed id that no conversation has, with a proof for a future owner."""
        assert hello.conversation_id is not None
        if not _PUBLIC_ID.fullmatch(hello.conversation_id):
            return False
        if customer_id is None and not (
            hello.resume_token and _TOKEN.fullmatch(hello.resume_token)
        ):
            return False
        return not await self.app.conversations.exists(hello.conversation_id)

    def _follow(self, conv: ConversationRef) -> None:
        """Subscribe to the conversation; items wait in the queue until the pump starts."""
        self.conv = conv
        self.sub = self.app.hub.subscribe(conv.id)

    def _start_pump(self) -> None:
        self.pump = asyncio.create_task(self._pump_events())

    async def conversation(self) -> ConversationRef:
        """The stored conversation, creating it on first use."""
        if self.conv is None:
            assert self.store is not None and self.unsaved is not None
            public_id, token = self.unsaved
            conv, _ = await self.app.conversations.open(
                self.store.id, self.customer_id, public_id=public_id, resume_token=token
            )
            self.unsaved = None
            self._follow(conv)
            # Another tab may have stored it first and written to it before we subscribed:
            # send what the log has (usually nothing), then go live.
            events, high = await self.app.conversations.replay(conv, 0)
            for event in events:
                await self._forward(HubItem(conv.id, conv.store_id, stored=event))
            self.app.hub.seen(conv.id, high)
            self._start_pump()
        return self.conv  # type: ignore[return-value]

    async def _verify_identity(self, store: StoreInfo, token: str | None) -> tuple[int | None, str]:
        if not token:
            return None, ""
        try:
            claim = identity.verify(store.identity_secret, token)
            found = await self.app.conversations.run(find_customer, store.id, claim.customer)
            if found is None:
                raise IdentityError("the identity token names no customer of this store")
            return found
        except IdentityError as exc:
            await self.send_error(ErrorCode.INVALID_IDENTITY, f"{exc.message}; continuing as guest")
            return None, ""

    # ---- messages after hello -----------------------------------------------------------

    async def _dispatch(self, msg: chat.ClientMessage) -> None:
        try:
            await self._handle(msg)
        except ChatbotError as exc:
            await self.send_error(exc.code, exc.message, getattr(msg, "id", None))
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("handling %s failed", type(msg).__name__)
            await self.send_error(ErrorCode.INTERNAL_ERROR, "something went wrong on our side")

    async def _handle(self, msg: chat.ClientMessage) -> None:
        service, replies = self.app.conversations, self.app.replies
        if isinstance(
            msg, chat.Handoff | chat.End | chat.Feedback | chat.Stop | chat.Confirm
        ) and not (self.message_bucket.allow() and self.app.ip_messages.allow(self.ip)):
            # Issue #18: every action a shopper can take spends from the message limits
            # (per connection and per address), not only messages.
            await self.send_error(ErrorCode.RATE_LIMITED, "too many requests; wait a few seconds",
                                  getattr(msg, "id", None))
            return
        if isinstance(msg, chat.Message):
            await self._on_message(msg)
        elif isinstance(msg, chat.Hello):
            await self.send_error(ErrorCode.ALREADY_STARTED, "this connection already said hello")
        elif isinstance(msg, chat.Handoff):
            await self._on_handoff(msg)
        elif isinstance(msg, chat.Confirm):
            await self._on_confirm(msg)
        elif self.conv is None:
            # Nothing stored yet: no reply to rate or stop, nothing to close, nobody
            # watching the typing indicator.
            if isinstance(msg, chat.Feedback):
                raise NotFoundError(f"no reply {msg.reply_id!r} in this conversation")
        elif isinstance(msg, chat.Typing):
            service.publish_ephemeral(
                self.conv, chat.Status(kind="typing" if msg.active else "idle"), audience="agents"
            )
        elif isinstance(msg, chat.Feedback):
            await service.record_feedback(self.conv, msg.reply_id, msg.rating, msg.comment)
        elif isinstance(msg, chat.Stop):
            replies.stop(self.conv.id, "stopped", msg.reply_id)
        elif isinstance(msg, chat.End):
            replies.stop(self.conv.id, "ended")
            await service.end(self.conv, msg.rating, msg.comment)

    async def _on_message(self, msg: chat.Message) -> None:
        limits = self.app.settings.limits
        if len(msg.text) > limits.max_message_chars:
            await self.send_error(
                ErrorCode.MESSAGE_TOO_LONG,
                f"messages are limited to {limits.max_message_chars} characters",
                msg.id,
            )
            return
        if not msg.text.strip():
            await self.send_error(ErrorCode.EMPTY_MESSAGE, "the message is empty", msg.id)
            return
        if not self.message_bucket.allow() or not self.app.ip_messages.allow(self.ip):
            await self.send_error(
                ErrorCode.RATE_LIMITED, "too many messages; wait a few seconds", msg.id
            )
            return
        conv = await self.conversation()
        if not self.app.replies.can_accept(conv.id):
            await self.send_error(
                ErrorCode.QUEUE_FULL, "please wait for the answer before sending more", msg.id
            )
            return
        ack, duplicate = await self.app.conversations.add_shopper_message(conv, msg.id, msg.text)
        if duplicate:
            # The client missed the first ack (reconnect): repeat it, store nothing.
            await self.conn.send(chat.encode_logged(ack.kind, ack.seq, ack.payload))
            return
        self.app.metrics.messages.inc()
        self.app.replies.submit(conv, PendingMessage(msg.id, msg.text, ack.seq, ip=self.ip))

    async def _on_confirm(self, msg: chat.Confirm) -> None:
        """Confirm / Keep my order (issue #19): as ``ChatSession._confirm``, which the
        session pump (issue #17) runs instead of this."""
        if self.conv is None:
            await self.send_error(ErrorCode.UNKNOWN_ACTION, "unknown action id", msg.action_id)
            return
        try:
            await self.app.actions.check_confirm(self.conv, msg.action_id)
        except ChatbotError as exc:
            await self.send_error(exc.code, exc.message, msg.action_id)
            return
        if (await self.app.conversations.get(self.conv.id)).state == "agent":
            await self.send_error(
                ErrorCode.NOT_ALLOWED,
                "a team member is handling this conversation; tell them your answer here",
                msg.action_id,
            )
            return
        if not self.app.replies.can_accept(self.conv.id):
            await self.send_error(ErrorCode.QUEUE_FULL,
                                  "please wait for the answer before sending more", msg.action_id)
            return
        text = CONFIRM_TEXT[msg.accept]
        ack, duplicate = await self.app.conversations.add_shopper_message(
            self.conv, confirm_message_id(msg.action_id), text
        )
        if duplicate:
            await self.conn.send(chat.encode_logged(ack.kind, ack.seq, ack.payload))
            return
        self.app.metrics.messages.inc()
        self.app.replies.submit(self.conv, PendingMessage(
            ack.payload["id"], text, ack.seq, ip=self.ip, confirm=(msg.action_id, msg.accept)
        ))

    async def _on_handoff(self, msg: chat.Handoff) -> None:
        # A handoff makes a waiting conversation in the agents' inbox: at most
        # ``waiting_per_ip_per_hour`` of them per address (issue #18).
        if (
            self.conv is None or (await self.app.conversations.get(self.conv.id)).state == "bot"
        ) and not self.app.handoff_allowed(self.ip):
            await self.send_error(
                ErrorCode.RATE_LIMITED,
                "too many requests for a person from your network; try again later "
                "or write your question here",
            )
            return
        conv = await self.conversation()
        for _ in range(3):
            fresh = await self.app.conversations.get(conv.id)
            if fresh.state != "bot":
                return  # already waiting for, or talking to, a person
            try:
                await self.app.conversations.transition(
                    fresh, Action.REQUEST_HANDOFF, reason=msg.reason or "asked in the widget"
                )
                return
            except ConflictError as exc:
                if exc.code != "conflict":
                    raise


def remote_ip(conn: Any) -> str:
    """The peer's IP address (proxies are not trusted: no X-Forwarded-For)."""
    address = getattr(conn, "remote_address", None)
    if isinstance(address, tuple) and address:
        return str(address[0])
    return "unknown"
