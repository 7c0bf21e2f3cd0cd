"""Order actions in the console (issue #19): a store's approval queue and an agent's own.

Part of :class:`~chatbot.session.agent.AgentSession` (a mixin, no I/O). Any agent of a
store lists its approval queue, approves and rejects; only admins change the modes (auto /
approval / off per kind). The store last asked about is the one whose queue this console
follows (``actions_store``): a change to it, here or through another process, sends
``actions`` again (:class:`~chatbot.session.agent_effects.FlushActions`). An agent's own
action for a conversation's customer is a preview (``propose_action``) and the agent's
yes or no (``confirm_action``), both answered with ``action_preview``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from chatbot.agents.authz import Principal
from chatbot.conversations.hub import HubItem
from chatbot.conversations.log import ConversationRef
from chatbot.errors import AuthError
from chatbot.protocol import agent as proto
from chatbot.protocol.common import ErrorCode
from chatbot.session import agent_effects as ax
from chatbot.session.agent_effects import Steps

# Stored events that change a store's approval queue (an action awaiting approval, an
# agent's decision, an expiry).
QUEUE_EVENTS = frozenset({"action"})
StoreActionMessage = (
    proto.ListActions | proto.ApproveAction | proto.RejectAction | proto.SetActionModes
)
AgentActionMessage = proto.ProposeAction | proto.ConfirmAction


class ActionsMixin:
    """The order-action side of a console session (state set up by ``AgentSession.__init__``)."""

    principal: Principal | None
    actions_store: tuple[int, str] | None  # (id, name): the approval queue shown

    if TYPE_CHECKING:  # the session's own, see chatbot.session.agent.AgentSession

        def _me(self) -> Principal: ...

        def _store(self, key: str) -> Generator[Any, Any, tuple[int, str]]: ...

        def _conversation(self, public_id: str) -> Generator[Any, Any, ConversationRef]: ...

    def check_configure_actions(self) -> None:
        """Only admins change a store's action modes (auto / approval / off, issue #19);
        any agent of the store sees the queue, approves and rejects."""
        if not self._me().is_admin:
            raise AuthError("only admins change the action modes", code=ErrorCode.FORBIDDEN)

    def _store_actions(self, msg: StoreActionMessage) -> Steps:
        store = yield from self._store(msg.store)
        me = self._me()
        if isinstance(msg, proto.SetActionModes):
            self.check_configure_actions()
            yield ax.SetModes(store[0], msg.modes, me.email)
        elif isinstance(msg, proto.ApproveAction):
            yield ax.Approve(store[0], msg.action_id, me.email)
        elif isinstance(msg, proto.RejectAction):
            yield ax.Reject(store[0], msg.action_id, me.email, msg.reason)
        self.actions_store = store
        yield from self.send_actions()

    def send_actions(self) -> Steps:
        """The followed store's approval queue, as it is now."""
        if self.actions_store is None or self.principal is None:
            return
        store_id, name = self.actions_store
        queue = yield ax.ActionQueue(store_id)
        yield ax.Send(proto.encode(proto.Actions(
            name, queue["pending"], queue["modes"], self._me().is_admin
        )))

    def _agent_action(self, msg: AgentActionMessage) -> Steps:
        conv = yield from self._conversation(msg.conversation_id)
        me = self._me()
        if isinstance(msg, proto.ProposeAction):
            preview = yield ax.Propose(conv, msg.kind, msg.params, me.email)
        else:
            preview = yield ax.AnswerProposal(conv, msg.action_id, msg.accept, me.email)
        yield ax.Send(proto.encode(proto.ActionPreview(conv.public_id, preview)))

    @staticmethod
    def changes_action_queue(item: HubItem) -> bool:
        return item.stored is not None and item.stored.kind in QUEUE_EVENTS
