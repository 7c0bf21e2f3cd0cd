"""In-process fan-out of conversation events, and the hook that stops a bot reply.

The database is the source of truth; the hub is only a live cache so that sockets of
this process see each other's events without polling. Publishers: the conversation
service (after each commit) and the sockets (ephemeral events such as typing).
Subscribers: shopper sockets (one conversation) and agent sockets (one conversation, or a
whole store's inbox).

Several server processes: each hub sees only its own process. Events written by another
process reach a socket when it (re)reads the log (``hello`` with ``last_seq``), and the
bot's silence under an agent is enforced in SQL (see ``ConversationService.append``), so
correctness never depends on the hub. Live cross-process fan-out needs a bridge that
publishes into every hub: :class:`~chatbot.conversations.poller.EventPoller` polls the log
of the conversations followed here (``chatbot serve --poll-events``); PostgreSQL
``LISTEN/NOTIFY`` on the conversation id would be the push version of the same bridge.

The hub remembers, per followed conversation, the highest stored ``seq`` it published and
drops stored events at or below it, so a bridge and local writers may both publish an
event without subscribers seeing it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from chatbot.protocol import chat

log = logging.getLogger(__name__)

Audience = Literal["all", "shopper", "agents"]


@dataclass(frozen=True)
class StoredEvent:
    """An event from the log: wire ``type`` (kind), fields (payload) and its ``seq``."""

    conversation_id: int
    seq: int
    kind: str
    payload: dict[str, Any]
    internal: bool = False
    reply_id: str | None = None

    def wire(self) -> dict[str, Any]:
        """The event as a wire object (``v``, ``type``, ``seq`` and its fields)."""
        return chat.wire(self.kind, self.seq, self.payload)


@dataclass(frozen=True)
class HubItem:
    """One thing delivered to subscribers: a stored event, or an ephemeral one (no seq)."""

    conversation_id: int
    store_id: int
    stored: StoredEvent | None = None
    # Wire fields of an ephemeral event without ``seq`` (the receiver stamps its own).
    ephemeral: dict[str, Any] | None = None
    audience: Audience = "all"
    # Conversation state after this item, when it changed ownership.
    state: str | None = None


@dataclass(eq=False)
class Subscription:
    """A bounded queue of items; ``overflowed`` is set when the consumer fell behind."""

    hub: ConversationHub
    key: tuple[str, int]
    maxsize: int
    queue: asyncio.Queue[HubItem] = field(init=False)
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.maxsize)

    def put(self, item: HubItem) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # A consumer this slow is dropped; it resumes from the log with last_seq,
            # so nothing is lost and memory stays bounded.
            self.overflowed.set()

    async def get(self) -> HubItem:
        return await self.queue.get()

    def close(self) -> None:
        self.hub._unsubscribe(self)


ReplyCanceller = Callable[[str], bool]


class ConversationHub:
    """Per-process pub/sub by conversation and by store, plus reply cancellation."""

    def __init__(self, *, queue_size: int = 2048) -> None:
        self._queue_size = queue_size
        self._subs: dict[tuple[str, int], set[Subscription]] = defaultdict(set)
        self._cancellers: dict[int, ReplyCanceller] = {}
        # conversation id -> highest stored seq published here (only while followed);
        # used to drop a second publish of the same event.
        self._high: dict[int, int] = {}
        # conversation id -> position a subscriber already read from the log (replay);
        # only a starting point for the poller, never used to drop local events.
        self._seen: dict[int, int] = {}

    def subscribe(self, conversation_id: int) -> Subscription:
        """Live items of one conversation."""
        return self._add(("conversation", conversation_id))

    def subscribe_store(self, store_id: int) -> Subscription:
        """Live items of every conversation of a store (the console inbox)."""
        return self._add(("store", store_id))

    def subscribers(self, conversation_id: int) -> int:
        """How many sockets of this process follow the conversation."""
        return len(self._subs.get(("conversation", conversation_id), ()))

    def publish(self, item: HubItem) -> None:
        """Deliver ``item`` to the conversation's and the store's subscribers (no await)."""
        if item.stored is not None:
            high = self._high.get(item.conversation_id)
            if high is not None and item.stored.seq <= high:
                return  # already published (by a bridge or a local writer)
            if ("conversation", item.conversation_id) in self._subs:
                self._high[item.conversation_id] = item.stored.seq
        for key in (("conversation", item.conversation_id), ("store", item.store_id)):
            for sub in tuple(self._subs.get(key, ())):
                sub.put(item)

    def publish_store(self, item: HubItem) -> None:
        """Deliver ``item`` to the subscribers of its store only (no conversation follower,
        no seq bookkeeping): a notice that something of the store changed in another
        process, e.g. its approval queue (``ActionDesk.watch_queues``)."""
        for sub in tuple(self._subs.get(("store", item.store_id), ())):
            sub.put(item)

    def followed_stores(self) -> set[int]:
        """Stores whose inbox a socket of this process follows."""
        return {key for kind, key in self._subs if kind == "store"}

    def seen(self, conversation_id: int, seq: int) -> None:
        """Record that a subscriber read the log up to ``seq`` (e.g. its replay)."""
        if ("conversation", conversation_id) in self._subs:
            self._seen[conversation_id] = max(seq, self._seen.get(conversation_id, 0))

    def high(self, conversation_id: int) -> int | None:
        """Highest stored seq published here for a followed conversation, or None."""
        return self._high.get(conversation_id)

    def followed(self) -> dict[int, int | None]:
        """Conversations with subscribers here and the log position to poll after."""
        out: dict[int, int | None] = {}
        for kind, conversation_id in self._subs:
            if kind == "conversation":
                marks = [
                    m
                    for m in (self._high.get(conversation_id), self._seen.get(conversation_id))
                    if m is not None
                ]
                out[conversation_id] = max(marks) if marks else None
        return out

    # ---- reply cancellation (takeover, stop, shutdown) ---------------------------------

    def register_reply(self, conversation_id: int, cancel: ReplyCanceller) -> None:
        """Called by whoever runs the bot's replies for a conversation in this process."""
        self._cancellers[conversation_id] = cancel

    def unregister_reply(self, conversation_id: int, cancel: ReplyCanceller) -> None:
        if self._cancellers.get(conversation_id) is cancel:
            del self._cancellers[conversation_id]

    def cancel_reply(self, conversation_id: int, reason: str = "takeover") -> bool:
        """Stop the bot's reply in flight now; True if one was running here."""
        cancel = self._cancellers.get(conversation_id)
        return bool(cancel and cancel(reason))

    # ---- internals -----------------------------------------------------------------------

    def _add(self, key: tuple[str, int]) -> Subscription:
        sub = Subscription(self, key, self._queue_size)
        self._subs[key].add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]
                if sub.key[0] == "conversation":
                    self._high.pop(sub.key[1], None)
                    self._seen.pop(sub.key[1], None)
