"""AsyncActionService on the τ store: each named call runs on the executor it was handed
(the server's database thread), and the shopper's confirm check and the outcomes a reply
tells read the same as the action desk did before it had them (issue #17)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest

from chatbot.actions.async_service import AsyncActionService
from chatbot.actions.service import ActionIdError, ActionService
from chatbot.storage.clock import utcnow
from chatbot.storage.db import Database
from tests.unit.tau_support import ids, needs_tau

pytestmark = needs_tau

CANCEL = {"order": "#W9093821", "reason": "no longer needed"}  # harper_kovacs_8617, pending


class Clock:
    """The service's clock, shifted at will; it notes the thread of every caller."""

    def __init__(self) -> None:
        self.shift = timedelta(0)
        self.threads: set[str] = set()

    def __call__(self) -> datetime:
        self.threads.add(threading.current_thread().name.split("_")[0])
        return utcnow() + self.shift


@pytest.fixture()
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1, thread_name_prefix="db-thread")
    yield executor
    executor.shutdown()


async def test_calls_run_on_the_handed_thread_and_check_the_confirm(
    tau_db: Database, pool: ThreadPoolExecutor
) -> None:
    store_id, harper = ids(tau_db, "harper_kovacs_8617")
    clock = Clock()
    calls = AsyncActionService(ActionService(tau_db, clock=clock), pool)
    p = await calls.propose(store_id, "cancel_order", CANCEL, customer_id=harper,
                            verified_orders=[], conversation_id="c_one", actor="bot",
                            actor_id="")
    assert clock.threads == {"db-thread"}  # never the event loop's thread
    await calls.check_answerable(p.id, store_id=store_id, conversation_id="c_one")

    async def code(conversation_id: str = "c_one", store: int = store_id) -> str:
        with pytest.raises(ActionIdError) as refused:
            await calls.check_answerable(p.id, store_id=store, conversation_id=conversation_id)
        return refused.value.code

    assert await code("c_other") == "unknown_action"
    assert await code(store=store_id + 1000) == "unknown_action"
    clock.shift = timedelta(hours=2)
    assert await code() == "action_expired"
    clock.shift = timedelta(0)
    outcome = await calls.decline(p.id, store_id=store_id, conversation_id="c_one",
                                  actor="customer", actor_id="")
    assert outcome.status == "declined"
    assert await code() == "action_used"
    assert [(o.id, o.status) for o in await calls.outcomes(store_id, "c_one")] == [
        (p.id, "declined")]
    assert clock.threads == {"db-thread"}


async def test_an_agents_unrun_preview_is_no_outcome_for_the_shopper(
    tau_db: Database, pool: ThreadPoolExecutor
) -> None:
    store_id, harper = ids(tau_db, "harper_kovacs_8617")
    calls = AsyncActionService(ActionService(tau_db), pool)
    preview = await calls.propose(store_id, "cancel_order", CANCEL, customer_id=harper,
                                  verified_orders=[], conversation_id="c_two", actor="agent",
                                  actor_id="7")
    await calls.decline(preview.id, store_id=store_id, conversation_id="c_two",
                        actor="agent", actor_id="7")
    assert await calls.outcomes(store_id, "c_two") == []
    rows = await calls.of_conversation(store_id, "c_two")
    assert [(r.id, r.status) for r in rows] == [(preview.id, "declined")]
    pending, modes = await calls.queue(store_id, 10)
    assert pending == [] and modes["cancel_order"] in ("auto", "approval", "off")
