"""Order actions as coroutines for the server: one named call each, on the database thread.

:class:`AsyncActionService` is what the sockets' action desk (``chatbot/server/actions.py``)
asks of the actions domain: :class:`~chatbot.actions.service.ActionService`'s operations
(propose, execute, decline, approve, reject, the expiry's), whether a shopper may still
answer a proposal, and what the console reads of the actions tables (its approval queue
and modes, a conversation's proposals, the form for an agent's own action). Each method
is one call on the executor the server hands in (the conversation service's database
thread: on SQLite one writer thread, so these writes queue with the chat's instead of
sleeping in SQLite's busy loop), never "run this function there".

Writes that also go into a conversation's event log (an expiry with its ``action`` event)
are :class:`~chatbot.conversations.service.ConversationService`'s: it holds the
conversation's lock and publishes the events.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from sqlalchemy import select

from chatbot.actions.forms import action_form
from chatbot.actions.models import AWAITING_APPROVAL, DECLINED, EXPIRED, PROPOSED, ActionProposal
from chatbot.actions.policy import KINDS, SETTINGS_KEY, load_config
from chatbot.actions.service import (
    ActionIdError,
    ActionService,
    Outcome,
    Proposal,
    get_config,
    set_modes,
)
from knowledge_base.models import Store

T = TypeVar("T")

# What a store's approval queue looks like to a console: the ids awaiting approval, oldest
# first, and the store's modes (compared, never shown).
QueueSignature = tuple[tuple[str, ...], str]


class AsyncActionService:
    """:class:`ActionService` and the console's reads of the actions tables, awaited from
    the event loop; every call runs on ``executor`` (None: the loop's default pool)."""

    def __init__(self, service: ActionService, executor: Executor | None) -> None:
        self.service = service
        self._executor = executor

    async def _on_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor,
                                          functools.partial(fn, *args, **kwargs))

    # ---- ActionService's operations --------------------------------------------------

    async def get(self, action_id: str, *, store_id: int) -> Proposal:
        """The store's proposal ``action_id``; ``ActionIdError`` when it has none."""
        return await self._on_thread(self.service.get, action_id, store_id=store_id)

    async def propose(self, store_id: int, kind: str, params: dict[str, Any], *,
                      customer_id: int | None, verified_orders: Sequence[str],
                      conversation_id: str, actor: str, actor_id: str) -> Proposal:
        """:meth:`ActionService.propose` (``ActionRefused`` with the policy's reason)."""
        return await self._on_thread(
            self.service.propose, store_id, kind, params, customer_id=customer_id,
            verified_orders=verified_orders, conversation_id=conversation_id, actor=actor,
            actor_id=actor_id,
        )

    async def execute(self, action_id: str, *, store_id: int, conversation_id: str,
                      actor: str, actor_id: str) -> Outcome:
        return await self._on_thread(
            self.service.execute, action_id, store_id=store_id,
            conversation_id=conversation_id, actor=actor, actor_id=actor_id,
        )

    async def decline(self, action_id: str, *, store_id: int, conversation_id: str,
                      actor: str, actor_id: str) -> Outcome:
        return await self._on_thread(
            self.service.decline, action_id, store_id=store_id,
            conversation_id=conversation_id, actor=actor, actor_id=actor_id,
        )

    async def approve(self, action_id: str, *, store_id: int, agent: str) -> Outcome:
        return await self._on_thread(self.service.approve, action_id, store_id=store_id,
                                     agent=agent)

    async def reject(self, action_id: str, *, store_id: int, agent: str,
                     reason: str) -> Outcome:
        return await self._on_thread(self.service.reject, action_id, store_id=store_id,
                                     agent=agent, reason=reason)

    async def set_modes(self, store_id: int, modes: dict[str, str], *, agent: str) -> None:
        """An agent (an admin) sets some kinds' modes for the store; validated, audited."""
        await self._on_thread(set_modes, self.service.db, store_id, modes, actor="agent",
                              actor_id=agent)

    async def due_for_expiry(self) -> list[tuple[str, int, str]]:
        """``(action id, store id, conversation id)`` of the proposals past their expiry."""
        return await self._on_thread(self.service.due_for_expiry)

    async def expire(self, action_id: str) -> bool:
        """Expire a proposal made outside any conversation (the CLI's): nobody to tell.
        False when it was not due or no longer ``proposed``."""
        return await self._on_thread(_expire_alone, self.service, action_id)

    # ---- the shopper's confirm ---------------------------------------------------------

    async def check_answerable(self, action_id: str, *, store_id: int,
                               conversation_id: str) -> None:
        """None when the shopper of ``conversation_id`` can still say yes or no to
        ``action_id``; else ``ActionIdError`` with its code (``unknown_action``: of
        another store or conversation; ``action_expired``; ``action_used``). Reads only."""
        await self._on_thread(_check_answerable, self.service, action_id, store_id,
                              conversation_id)

    async def outcomes(self, store_id: int, conversation_id: str) -> list[Outcome]:
        """The outcomes of the conversation's proposals that are no longer ``proposed``
        (ended, or gone to an agent), in the order they were decided; an agent's preview
        that ended without running is left out (the shopper never saw it)."""
        return await self._on_thread(_outcomes, self.service, store_id, conversation_id)

    # ---- the console -------------------------------------------------------------------

    async def queue(self, store_id: int, limit: int) -> tuple[list[Proposal], dict[str, str]]:
        """The store's proposals awaiting approval (oldest first, at most ``limit``) and
        its mode per kind."""
        return await self._on_thread(_queue, self.service, store_id, limit)

    async def queue_signatures(self, store_ids: list[int]) -> dict[int, QueueSignature]:
        """Per store: what its console queue shows, to compare with an earlier look."""
        return await self._on_thread(_queue_signatures, self.service, store_ids)

    async def of_conversation(self, store_id: int, conversation_id: str) -> list[Proposal]:
        """The conversation's proposals with their status, oldest first."""
        return await self._on_thread(self.service.of_conversation, store_id, conversation_id)

    async def form(self, store_id: int, customer_id: int | None,
                   orders: Sequence[str]) -> dict[str, Any]:
        """The choices of the console's form for an agent's own action for this customer
        (or the orders a guest proved): :func:`chatbot.actions.forms.action_form`."""
        return await self._on_thread(_form, self.service, store_id, customer_id,
                                     list(orders))


# ---- the calls, on the database thread ---------------------------------------------------


def _expire_alone(service: ActionService, action_id: str) -> bool:
    with service.db.transaction() as session:
        return service.expire_in(session, action_id) is not None


def _check_answerable(service: ActionService, action_id: str, store_id: int,
                      conversation_id: str) -> None:
    p = service.get(action_id, store_id=store_id)  # ActionIdError if unknown
    if p.conversation_id != conversation_id:
        raise ActionIdError("unknown action id", code="unknown_action")
    if p.status == EXPIRED or (p.status == PROPOSED and p.expires_at <= service.clock()):
        raise ActionIdError("this action has expired", code="action_expired")
    if p.status != PROPOSED:
        raise ActionIdError(f"this action was already answered ({p.status})",
                            code="action_used")


def _preview_only(p: ActionProposal) -> bool:
    """An agent's preview that ended without running (declined, expired): told to agents
    when it ended, never to the shopper, who did not see it."""
    return p.proposed_by == "agent" and p.status in (DECLINED, EXPIRED)


def _outcomes(service: ActionService, store_id: int, conversation_id: str) -> list[Outcome]:
    with service.db.session() as session:
        rows = session.scalars(
            select(ActionProposal)
            .where(ActionProposal.store_id == store_id,
                   ActionProposal.conversation_id == conversation_id,
                   ActionProposal.status != PROPOSED)
            .order_by(ActionProposal.decided_at, ActionProposal.id)
        )
        return [
            Outcome(id=p.public_id, kind=p.kind, status=p.status, summary=p.summary,
                    reason=p.reason)
            for p in rows if not _preview_only(p)
        ]


def _queue(service: ActionService, store_id: int, limit: int
           ) -> tuple[list[Proposal], dict[str, str]]:
    pending = service.awaiting_approval(store_id)[:limit]
    config = get_config(service.db, store_id)
    return pending, {kind: config.mode(kind) for kind in KINDS}


def _queue_signatures(service: ActionService, store_ids: list[int]
                      ) -> dict[int, QueueSignature]:
    with service.db.session() as session:
        waiting: dict[int, list[str]] = {store_id: [] for store_id in store_ids}
        for store_id, public_id in session.execute(
            select(ActionProposal.store_id, ActionProposal.public_id)
            .where(ActionProposal.store_id.in_(store_ids),
                   ActionProposal.status == AWAITING_APPROVAL)
            .order_by(ActionProposal.id)
        ):
            waiting[store_id].append(public_id)
        settings: dict[int, Any] = dict(session.execute(
            select(Store.id, Store.settings).where(Store.id.in_(store_ids))).all())
    return {
        store_id: (tuple(ids), repr(sorted(
            ((settings.get(store_id) or {}).get(SETTINGS_KEY) or {}).get("modes", {})
            .items())))
        for store_id, ids in waiting.items()
    }


def _form(service: ActionService, store_id: int, customer_id: int | None,
          orders: list[str]) -> dict[str, Any]:
    with service.db.session() as session:
        store = session.get(Store, store_id)
        config = load_config(store.settings if store is not None else {})
        return action_form(session, store_id, config, customer_id=customer_id,
                           verified_orders=orders)


__all__ = ["AsyncActionService", "QueueSignature"]
