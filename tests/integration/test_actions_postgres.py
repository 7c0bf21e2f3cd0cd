"""Order actions on PostgreSQL (skipped when it is unreachable): the conditional status
flip and row locks under two processes confirming at once, the append-only trigger, and
τ replays giving the same state as on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from chatbot.actions.service import ActionService, audit_log
from chatbot.actions.tau import TauReplayer, apply_tool_call, export_state, load_tasks
from chatbot.storage.db import Database
from knowledge_base.importers import import_path
from knowledge_base.models import Customer, Store
from tests.pg import throwaway_pg_database
from tests.unit.test_actions import confirm_from_two_processes

REPO = Path(__file__).resolve().parents[2]
TAU = REPO.parent / "shared" / "datasets" / "tau_retail"

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not (TAU / "orders.json").exists(), reason="no ../shared τ data"),
]


@pytest.fixture(scope="module")
def pg() -> Iterator[tuple[Database, int]]:
    with throwaway_pg_database() as url:
        db = Database(url)
        try:
            import_path(db, "tau-retail", TAU, "tau")
            with db.session() as s:
                store_id = s.scalar(select(Store.id).where(Store.name == "tau"))
            yield db, store_id
        finally:
            db.dispose()


def test_two_processes_confirming_at_once_act_once(pg) -> None:  # type: ignore[no-untyped-def]
    db, store_id = pg
    with db.session() as s:
        ethan = s.scalar(select(Customer.id).where(Customer.source_id == "ethan_lopez_6291"))
    service = ActionService(db)
    p = service.propose(store_id, "cancel_order",
                        {"order": "#W6779827", "reason": "ordered by mistake"}, customer_id=ethan)
    assert confirm_from_two_processes(db.url, p.id, store_id) == ["action_used", "executed"]
    order = export_state(db)["orders"]["#W6779827"]
    assert [t["transaction_type"] for t in order["payment_history"]] == ["payment", "refund"]
    user = export_state(db)["users"]["ethan_lopez_6291"]
    assert user["payment_methods"]["gift_card_7219486"]["balance"] == pytest.approx(4128.45)
    assert [r["event"] for r in audit_log(db, store_id, order="#W6779827")] == [
        "proposed", "executed"]
    with pytest.raises(Exception, match="append-only"), db.transaction() as s:
        s.execute(text("UPDATE action_audit SET summary = 'x'"))


def test_dev_replays_match_sqlite(pg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db, store_id = pg
    service = ActionService(db)
    replayer = TauReplayer(TAU, tmp_path)
    seen: set[str] = {"ethan_lopez_6291"}
    checked = 0
    try:
        for task in load_tasks(TAU, "dev"):
            if task["user_id"] in seen:
                continue  # each task on its own customer's orders, from their initial state
            seen.add(task["user_id"])
            for action in task["actions"]:
                assert apply_tool_call(service, store_id, action["name"], action["arguments"]).ok
            expected = replayer.replay(task).state
            actual = export_state(db)
            touched = {a["arguments"]["order_id"] for a in task["actions"]
                       if "order_id" in a["arguments"]}
            for number in touched:
                assert actual["orders"][number] == expected["orders"][number]
            assert actual["users"][task["user_id"]] == expected["users"][task["user_id"]]
            checked += 1
    finally:
        replayer.close()
    assert checked >= 15
