"""Order actions at the sockets (issue #19): the shopper's confirm and the console's side.

:class:`ActionDesk` is the narrow service both sockets use. For the shopper socket it
checks a ``confirm`` frame's id before anything is stored (an id of another store or
conversation reads as unknown; an expired or answered one gets its code; nothing
changes). For the console it lists a store's approval queue and modes, approves and
rejects (the shopper is told: an ``action`` event and a short bot message in the
conversation), sets the modes (admins), lists a conversation's actions for the customer
panel, and runs an action for the customer on an agent's own preview and confirmation.

The domain rules (policy, idempotency, audit) are :class:`chatbot.actions.service.
ActionService`'s; this module asks them through :class:`chatbot.actions.async_service.
AsyncActionService` (one named call each, on the database thread) and tells the
conversation what happened through :class:`~chatbot.conversations.service.
ConversationService`'s named methods (``add_action_outcome``, ``expire_action``, ...).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from chatbot.actions.async_service import AsyncActionService, QueueSignature
from chatbot.actions.models import AWAITING_APPROVAL, ActionProposal
from chatbot.actions.service import ActionIdError, ActionService, Outcome, Proposal
from chatbot.conversations.hub import HubItem, StoredEvent
from chatbot.conversations.log import ConversationRef, find_in_store
from chatbot.conversations.service import ConversationService, store_action_outcome

log = logging.getLogger(__name__)

# How often each server process expires proposals nobody answered (their ttl is 30 min).
EXPIRY_SWEEP_S = 30.0

# The console's rows are capped: a queue longer than this is a problem of its own.
MAX_QUEUE_ROWS = 200


def proposal_row(p: Proposal | ActionProposal) -> dict[str, Any]:
    """A proposal as the console shows it (queue rows, the customer panel)."""
    if isinstance(p, ActionProposal):
        order, public_id = p.order_number, p.public_id
    else:
        order, public_id = p.order_number, p.id
    return {
        "id": public_id,
        "kind": p.kind,
        "status": p.status,
        "summary": p.summary,
        "details": dict(p.details or {}),
        "reason": p.reason or "",
        "conversation_id": p.conversation_id,
        "order": order,
        "expires_at": p.expires_at.isoformat(timespec="seconds") if p.expires_at else None,
    }


def shopper_text(outcome: Outcome, *, by_agent: str) -> str:
    """What the shopper reads after an agent's decision (``by_agent``: approved,
    rejected, ran)."""
    from chatbot.answering.acting import outcome_plan  # the bot's own wording

    text = outcome_plan(outcome).text
    if outcome.status == "declined" and by_agent == "rejected":
        reason = outcome.reason or "A member of our team did not approve this request."
        return f"Our team did not approve your request, so nothing was changed. {reason}"
    if by_agent == "approved":
        return f"Our team approved your request. {text}"
    return text


class ActionDesk:
    """Order actions for the sockets: the actions domain through ``self.calls`` (on the
    database thread), the conversations through their service's named methods.

    ``conversations.executor`` (its database thread) is handed, uncalled, to the
    :class:`AsyncActionService` alone (tests/unit/test_architecture.py)."""

    def __init__(self, conversations: ConversationService,
                 actions: ActionService | None = None) -> None:
        self.conversations = conversations
        self.actions = actions or ActionService(conversations.db)
        self.calls = AsyncActionService(self.actions, conversations.executor)

    # ---- the shopper's confirm --------------------------------------------------------

    async def check_confirm(self, conv: ConversationRef, action_id: str) -> None:
        """None if the shopper can still answer ``action_id`` in ``conv``; else
        ``ActionIdError``. Reads only."""
        await self.calls.check_answerable(action_id, store_id=conv.store_id,
                                          conversation_id=conv.public_id)

    async def untold_outcomes(self, conv: ConversationRef) -> list[dict[str, Any]]:
        """The ``action`` events of the conversation's proposals that ended (or went to an
        agent) and that its log does not tell yet: the one a reply answered, one the
        shopper moved on from (the pipeline declined it), one whose reply was cut short.
        The reply manager stores them with the reply's ``done`` (deduplicated there,
        under the conversation's lock)."""
        ended = await self.calls.outcomes(conv.store_id, conv.public_id)
        if not ended:
            return []
        told = await self.conversations.told_actions(conv)
        return [o.to_event() for o in ended if (o.id, o.status) not in told]

    # ---- several processes: the approval queue ------------------------------------------

    async def watch_queues(self, interval_s: float) -> None:
        """With several server processes on one database: every ``interval_s``, compare
        the approval queue of each store a console of this process follows with what it
        was, and when it changed (a shopper's yes in approval mode, a decision, a mode
        change made through another process) tell the followers, which send ``actions``
        again. What the queue shows lives in the database, so nothing a console must see
        depends on which process wrote it. Runs until cancelled."""
        seen: dict[int, QueueSignature] = {}
        hub = self.conversations.hub
        while True:
            await asyncio.sleep(interval_s)
            stores = sorted(hub.followed_stores())
            for gone in set(seen) - set(stores):
                del seen[gone]
            if not stores:
                continue
            try:
                signatures = await self.calls.queue_signatures(stores)
            except Exception:
                log.exception("reading the approval queues failed")
                continue
            for store_id, signature in signatures.items():
                if seen.get(store_id) != signature:
                    # (Also the first look at a store: a change just before it counts.)
                    hub.publish_store(HubItem(0, store_id, stored=StoredEvent(
                        0, 0, "action", {"queue": list(signature[0])}, internal=True)))
                seen[store_id] = signature

    # ---- expiry -----------------------------------------------------------------------

    async def expire_due(self) -> int:
        """Expire every proposal past its expiry, each in one transaction with its
        ``action`` event (``expired``) in its conversation, so the card says so; returns
        how many this call expired. Safe in every process at once: the status flip is
        conditional, and an outcome is told once."""
        due = await self.calls.due_for_expiry()
        count = 0
        for action_id, store_id, conversation_id in due:
            conv = None
            if conversation_id:
                conv = await self.conversations.find(store_id, conversation_id)
            if conv is None:  # proposed outside a conversation (CLI): nobody to tell
                count += await self.calls.expire(action_id)
                continue
            outcome = await self.conversations.expire_action(conv, self.actions, action_id)
            count += outcome is not None
        return count

    async def run_expiry(self, interval_s: float = EXPIRY_SWEEP_S) -> None:
        """Expire due proposals every ``interval_s`` until cancelled (one task per
        server process)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.expire_due()
            except Exception:
                log.exception("expiring order-action proposals failed")

    # ---- the console: queue, decisions, modes -------------------------------------------

    async def queue(self, store_id: int) -> dict[str, Any]:
        """``{"pending": [rows awaiting approval, oldest first], "modes": {kind: mode}}``."""
        pending, modes = await self.calls.queue(store_id, MAX_QUEUE_ROWS)
        return {"pending": [proposal_row(p) for p in pending], "modes": modes}

    async def _tell(self, store_id: int, outcome: Outcome, conversation_id: str,
                    by_agent: str) -> None:
        if not conversation_id:
            return  # proposed outside a conversation (CLI): nobody to tell
        conv = await self.conversations.find(store_id, conversation_id)
        if conv is None:
            return
        await self.conversations.add_action_outcome(
            conv, outcome.to_event(), shopper_text(outcome, by_agent=by_agent)
        )

    async def approve(self, store_id: int, action_id: str, agent: str) -> Outcome:
        """Approve (checked again, then executed); the shopper is told."""
        p = await self.calls.get(action_id, store_id=store_id)
        outcome = await self.calls.approve(action_id, store_id=store_id, agent=agent)
        await self._tell(store_id, outcome, p.conversation_id, "approved")
        return outcome

    async def reject(self, store_id: int, action_id: str, agent: str, reason: str) -> Outcome:
        """Reject (``declined`` with the reason); the shopper is told."""
        p = await self.calls.get(action_id, store_id=store_id)
        outcome = await self.calls.reject(action_id, store_id=store_id, agent=agent,
                                          reason=reason)
        await self._tell(store_id, outcome, p.conversation_id, "rejected")
        return outcome

    async def set_modes(self, store_id: int, modes: dict[str, str], agent: str) -> None:
        await self.calls.set_modes(store_id, modes, agent=agent)

    # ---- the console: one conversation ------------------------------------------------

    async def of_conversation(self, conv: ConversationRef) -> list[dict[str, Any]]:
        """The conversation's proposals with their status, oldest first."""
        return [proposal_row(p)
                for p in await self.calls.of_conversation(conv.store_id, conv.public_id)]

    async def _whom(self, conv: ConversationRef) -> tuple[int | None, list[str]]:
        """Whom an agent acts for: the conversation's signed-in customer, else the one the
        bot identified as the store's policy says (kept in the dialogue state), and the
        orders a guest proved."""
        return await self.conversations.shopper(conv)

    async def propose(self, conv: ConversationRef, kind: str, params: dict[str, Any],
                      agent: str) -> Proposal:
        """An agent proposes ``kind`` for the conversation's customer (or the orders the
        guest proved); raises ``ActionRefused`` with the policy's reason."""
        customer_id, orders = await self._whom(conv)
        return await self.calls.propose(
            conv.store_id, kind, params, customer_id=customer_id, verified_orders=orders,
            conversation_id=conv.public_id, actor="agent", actor_id=agent,
        )

    async def form(self, conv: ConversationRef) -> dict[str, Any]:
        """The choices of the console's form for an agent's own action in ``conv``
        (orders and their lines with the available options, payment methods, reasons,
        the address; see :mod:`chatbot.actions.forms`): the customer panel's
        ``action_form``."""
        customer_id, orders = await self._whom(conv)
        return await self.calls.form(conv.store_id, customer_id, orders)

    async def answer(self, conv: ConversationRef, action_id: str, accept: bool,
                     agent: str) -> Outcome:
        """The agent's own yes / no to a proposal they made for the customer; the shopper
        is told what was done."""
        p = await self.calls.get(action_id, store_id=conv.store_id)
        if p.conversation_id != conv.public_id:
            raise ActionIdError("unknown action id", code="unknown_action")
        if accept:
            outcome = await self.calls.execute(action_id, store_id=conv.store_id,
                                               conversation_id=conv.public_id, actor="agent",
                                               actor_id=agent)
        else:
            outcome = await self.calls.decline(action_id, store_id=conv.store_id,
                                               conversation_id=conv.public_id, actor="agent",
                                               actor_id=agent)
        if accept:
            await self._tell(conv.store_id, outcome, conv.public_id, "ran")
        else:
            # The shopper never saw the agent's preview: its end is in the log for agents.
            await self.conversations.add_action_outcome(conv, outcome.to_event(), "",
                                                        internal=True)
        return outcome


def tell_conversation(db: Any, store_id: int, conversation_id: str, outcome: Outcome,
                      by_agent: str) -> bool:
    """Store an agent's decision made outside the server (``chatbot actions approve`` /
    ``reject``) in the proposal's conversation, as the console does: its ``action`` event
    and a short bot message. Sockets of a running server see it through the log (resume,
    the event poller). False when the proposal has no conversation."""
    if not conversation_id:
        return False
    with db.transaction() as session:
        conv = find_in_store(session, store_id, conversation_id)
        if conv is None:
            return False
        store_action_outcome(session, conv.id, outcome.to_event(),
                             shopper_text(outcome, by_agent=by_agent))
    return True


__all__ = ["AWAITING_APPROVAL", "ActionDesk", "proposal_row", "shopper_text",
           "tell_conversation"]
