"""The store inbox a console follows: its filter, the rows to send again, the snapshots.

Part of :class:`~chatbot.session.agent.AgentSession` (a mixin, no I/O): ``subscribe_inbox``
authorises the store, follows it and sends a snapshot (``inbox``); live items of the store
queue the rows they change (``pending``), and the pump's debounce flushes them as one
``inbox_update`` per row (:class:`~chatbot.session.agent_effects.FlushRows`). A queue that
fell behind starts over with a fresh snapshot.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatbot.agents.authz import Principal
from chatbot.conversations.hub import HubItem
from chatbot.protocol import agent as proto
from chatbot.session import agent_effects as ax
from chatbot.session.agent_effects import Steps

# Stored events that change an inbox row (tokens do not: the preview changes on ``done``).
ROW_EVENTS = frozenset({"ack", "done", "agent_message", "note", "status"})


@dataclass(frozen=True)
class InboxView:
    """The store inbox this console follows: the store, the filter and the search."""

    store_id: int
    store: str
    filter: str = "open"
    q: str = ""


class InboxMixin:
    """The inbox side of a console session (state set up by ``AgentSession.__init__``)."""

    principal: Principal | None
    inbox: InboxView | None  # the followed inbox, None before ``subscribe_inbox``
    pending: set[int]  # ids of inbox rows to send again

    if TYPE_CHECKING:  # the session's own, see chatbot.session.agent.AgentSession

        def _store(self, key: str) -> Generator[Any, Any, tuple[int, str]]: ...

        def receive(self, msg: proto.ClientMessage) -> Steps: ...

    def _subscribe(self, msg: proto.SubscribeInbox) -> Steps:
        store_id, name = yield from self._store(msg.store)
        yield ax.StopInbox()
        self.inbox = InboxView(store_id, name, msg.filter, msg.q)
        self.pending.clear()
        # Follow before reading: a change committed in between arrives as an update.
        yield ax.FollowInbox(store_id)
        yield from self.inbox_snapshot()
        yield ax.StartInboxPump()

    def inbox_snapshot(self) -> Steps:
        """The followed inbox as it is now (also the periodic refresh of several processes)."""
        view, me = self.inbox, self.principal
        if view is None or me is None:
            return
        rows, counts = yield ax.InboxSnapshot(view.store_id, me.agent_id, view.filter, view.q)
        yield ax.Send(proto.encode(proto.Inbox(view.store, view.filter, view.q, rows, counts)))

    def inbox_fell_behind(self) -> Steps:
        """The store's live queue overflowed: start over with a fresh snapshot."""
        if self.inbox is not None:
            view = self.inbox
            yield from self.receive(proto.SubscribeInbox(view.store, view.filter, view.q))

    def _queue_row(self, conversation_id: int) -> list[ax.AgentEffect]:
        if self.inbox is None:
            return []
        self.pending.add(conversation_id)
        return [ax.FlushRows()]

    def flush_rows(self) -> Steps:
        """The rows queued since the last flush, one ``inbox_update`` each."""
        view, me = self.inbox, self.principal
        if view is None or me is None:
            return
        ids, self.pending = sorted(self.pending), set()
        updates, counts = yield ax.InboxUpdates(view.store_id, ids, me.agent_id, view.filter,
                                                view.q)
        for row, matches in updates:
            yield ax.Send(proto.encode(proto.InboxUpdate(view.store, row, matches, counts)))

    @staticmethod
    def changes_inbox_row(item: HubItem) -> bool:
        return item.stored is not None and item.stored.kind in ROW_EVENTS
