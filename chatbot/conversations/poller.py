"""Cross-process fan-out by polling: bring other processes' events into this hub.

With several server processes behind a load balancer, a shopper and an agent may sit on
different processes. The database has every event; this poller, one per process, checks
the conversations followed here every ``interval_s`` (one indexed query over their
``last_seq``) and publishes the events it has not published yet, in seq order. Polling
by ``(conversation_id, seq)`` cannot skip an event: seqs of one conversation commit in
order (their allocation holds the conversation's row lock). Ephemeral events (typing,
thinking) stay in their process. PostgreSQL ``LISTEN/NOTIFY`` would push instead of
poll; the hub's seq de-duplication makes either safe next to local publishing.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from chatbot.conversations.hub import ConversationHub, HubItem, StoredEvent
from chatbot.conversations.log import events_after
from chatbot.conversations.models import Conversation
from chatbot.storage.db import Database, transaction

log = logging.getLogger(__name__)


class EventPoller:
    """Publishes events written by other processes for the conversations followed here."""

    def __init__(self, db: Database, hub: ConversationHub, interval_s: float = 0.5) -> None:
        self.db = db
        self.hub = hub
        self.interval_s = interval_s

    async def run(self) -> None:
        """Poll until cancelled; errors are logged and retried at the next tick."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll_once()
            except Exception:
                log.exception("event poll failed")

    async def poll_once(self) -> int:
        """One poll; returns how many events it published."""
        followed = self.hub.followed()
        if not followed:
            return 0
        fresh = await asyncio.to_thread(self._read, followed)
        published = 0
        for conversation_id, store_id, last_seq, events in fresh:
            if followed[conversation_id] is None:
                # Nobody recorded a position yet: start from now, publish nothing old.
                self.hub.seen(conversation_id, last_seq)
                continue
            after = followed[conversation_id] or 0
            for event in events:
                if event.seq <= after:
                    continue
                before = self.hub.high(conversation_id)
                self.hub.publish(HubItem(conversation_id, store_id, stored=event))
                published += self.hub.high(conversation_id) != before
        return published

    def _read(
        self, followed: dict[int, int | None]
    ) -> list[tuple[int, int, int, list[StoredEvent]]]:
        out: list[tuple[int, int, int, list[StoredEvent]]] = []
        with transaction(self.db.sessions) as session:
            rows = session.execute(
                select(Conversation.id, Conversation.store_id, Conversation.last_seq).where(
                    Conversation.id.in_(list(followed))
                )
            ).all()
            for conversation_id, store_id, last_seq in rows:
                high = followed[conversation_id]
                if high is None:
                    out.append((conversation_id, store_id, last_seq, []))
                elif last_seq > high:
                    events = events_after(
                        session, conversation_id, high, include_internal=True, coalesce=False
                    )
                    out.append((conversation_id, store_id, last_seq, events))
        return out
