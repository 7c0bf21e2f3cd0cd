"""τ-bench's retail tools on our action executors, and τ-bench's way of scoring a task.

τ-bench scores a task by replaying its expected tool calls on a fresh copy of the store
and comparing the resulting database with the agent's. Here the fresh copy is a fresh
import of the τ folder into a temporary SQLite database (imported once, then copied per
task), the replay goes through :class:`chatbot.actions.service.ActionService` (propose
then execute, the same code the chat uses), and the state compared is
:func:`knowledge_base.importers.tau_retail.export_store` of both stores.

    replayer = TauReplayer(Path("../shared/datasets/tau_retail"), workdir)
    result = replayer.replay(task)            # expected state + per-call outcomes
    score = replayer.score(task, actual_state)  # 1.0 when the states are equal
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from chatbot.actions.kinds import ActionRefused
from chatbot.actions.policy import (
    AUTO,
    CANCEL_ORDER,
    EXCHANGE_ITEMS,
    MODIFY_DEFAULT_ADDRESS,
    MODIFY_ORDER_ADDRESS,
    MODIFY_ORDER_ITEMS,
    MODIFY_ORDER_PAYMENT,
    RETURN_ITEMS,
)
from chatbot.actions.service import ActionService, Outcome
from chatbot.storage.db import Database
from knowledge_base.models import Customer, Order, Store

STORE = "tau"

# τ-bench tool name -> our action kind
TOOL_KINDS = {
    "cancel_pending_order": CANCEL_ORDER,
    "modify_pending_order_address": MODIFY_ORDER_ADDRESS,
    "modify_pending_order_payment": MODIFY_ORDER_PAYMENT,
    "modify_pending_order_items": MODIFY_ORDER_ITEMS,
    "return_delivered_order_items": RETURN_ITEMS,
    "exchange_delivered_order_items": EXCHANGE_ITEMS,
    "modify_user_address": MODIFY_DEFAULT_ADDRESS,
}
# Tools that only read (they change nothing, so a replay skips them).
READ_ONLY_TOOLS = frozenset({
    "find_user_id_by_email", "find_user_id_by_name_zip", "get_user_details",
    "get_order_details", "get_product_details", "list_all_product_types", "calculate",
    "transfer_to_human_agents", "think",
})


def tool_params(name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Translate a τ tool call into (our kind, our params)."""
    kind = TOOL_KINDS.get(name)
    if kind is None:
        raise ValueError(f"not a state-changing τ-bench tool: {name!r}")
    a = arguments
    params: dict[str, Any] = {}
    if "order_id" in a:
        params["order"] = a["order_id"]
    if kind == CANCEL_ORDER:
        params["reason"] = a.get("reason", "")
    if kind in (MODIFY_ORDER_ADDRESS, MODIFY_DEFAULT_ADDRESS):
        params["address"] = {k: a.get(k, "") for k in
                             ("address1", "address2", "city", "state", "country", "zip")}
    if "payment_method_id" in a:
        params["payment_method"] = a["payment_method_id"]
    if "item_ids" in a:
        params["items"] = list(a["item_ids"])
    if "new_item_ids" in a:
        params["new_items"] = list(a["new_item_ids"])
    return kind, params


@dataclass
class CallResult:
    """One replayed tool call: ``ok`` with the outcome, or the refusal / failure reason."""

    name: str
    arguments: dict[str, Any]
    ok: bool
    status: str
    reason: str = ""
    summary: str = ""


def apply_tool_call(service: ActionService, store_id: int, name: str,
                    arguments: dict[str, Any], *, user_id: str | None = None,
                    conversation_id: str = "") -> CallResult:
    """Run one τ tool call through propose + execute (mode ``auto``), as τ-bench would.

    The acting customer is the order's owner (or ``user_id`` for ``modify_user_address``),
    as in τ-bench, where the agent has authenticated that user. A call the policy
    refuses changes nothing, like a τ tool returning ``Error: ...``.
    """
    if name in READ_ONLY_TOOLS:
        return CallResult(name, arguments, True, "read_only")
    kind, params = tool_params(name, arguments)
    with service.db.session() as session:
        customer_id = None
        if kind == MODIFY_DEFAULT_ADDRESS:
            ref = arguments.get("user_id") or user_id or ""
            customer_id = session.scalar(select(Customer.id).where(
                Customer.store_id == store_id, Customer.source_id == ref))
        else:
            customer_id = session.scalar(select(Order.customer_id).where(
                Order.store_id == store_id, Order.number == params.get("order", "")))
    if customer_id is None:
        return CallResult(name, arguments, False, "refused", "order or user not found")
    try:
        proposal = service.propose(store_id, kind, params, customer_id=customer_id,
                                   conversation_id=conversation_id, actor="system")
    except ActionRefused as refusal:
        return CallResult(name, arguments, False, "refused", refusal.reason)
    outcome: Outcome = service.execute(proposal.id, store_id=store_id, actor="system",
                                       mode=AUTO)
    return CallResult(name, arguments, outcome.status == "executed", outcome.status,
                      outcome.reason, proposal.summary)


@dataclass
class Replay:
    """The state after replaying a task's expected actions on a fresh import."""

    task: dict[str, Any]
    state: dict[str, dict[str, Any]]
    calls: list[CallResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.calls)


@dataclass
class Score:
    """τ-bench's reward for one task: 1.0 when the final states are equal."""

    reward: float
    differences: list[str]
    expected: Replay


def state_hash(state: dict[str, Any]) -> str:
    """A stable digest of a τ state (dict key order does not matter, list order does)."""
    return hashlib.sha256(
        json.dumps(state, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def compare_states(expected: dict[str, Any], actual: dict[str, Any], *, limit: int = 20
                   ) -> list[str]:
    """Human-readable differences between two τ states (empty when equal)."""
    out: list[str] = []
    for table in ("users", "orders", "products"):
        a, b = expected.get(table, {}), actual.get(table, {})
        for key in sorted(set(a) | set(b)):
            if key not in b:
                out.append(f"{table}/{key}: missing")
            elif key not in a:
                out.append(f"{table}/{key}: unexpected")
            elif a[key] != b[key]:
                fields = sorted(k for k in set(a[key]) | set(b[key])
                                if a[key].get(k) != b[key].get(k))
                for f in fields:
                    out.append(f"{table}/{key}.{f}: expected {json.dumps(a[key].get(f))}, "
                               f"got {json.dumps(b[key].get(f))}")
            if len(out) >= limit:
                return out
    return out


class TauReplayer:
    """Fresh τ stores on demand: imported once into a template, copied per replay."""

    def __init__(self, dataset: Path, workdir: Path | None = None) -> None:
        self.dataset = Path(dataset)
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tau-replay-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A template left in a reused workdir by older import code is not reused: its
        # name carries a digest of the code that builds it.
        self.template = self.workdir / f"template-{_importer_digest()}.sqlite"
        self._count = 0
        self._initial: dict[str, Any] | None = None
        if not self.template.exists():
            self._build_template()

    def _build_template(self) -> None:
        from knowledge_base.importers import import_path

        building = self.workdir / "template.building.sqlite"
        building.unlink(missing_ok=True)
        db = Database(f"sqlite:///{building}")
        try:
            import_path(db, "tau-retail", self.dataset, STORE)
        finally:
            db.dispose()
        _sqlite_copy(building, self.template)
        building.unlink(missing_ok=True)

    def fresh(self) -> Database:
        """A new database holding a fresh import of the τ store (store name ``tau``)."""
        self._count += 1
        path = self.workdir / f"replay-{self._count}.sqlite"
        path.unlink(missing_ok=True)
        _sqlite_copy(self.template, path)
        return Database(f"sqlite:///{path}")

    def initial_state(self) -> dict[str, Any]:
        if self._initial is None:
            db = self.fresh()
            try:
                self._initial = export_state(db)
            finally:
                _drop(db)
        return json.loads(json.dumps(self._initial))

    def replay(self, task: dict[str, Any]) -> Replay:
        """Replay ``task['actions']`` on a fresh store; the exported state and each call."""
        db = self.fresh()
        try:
            service = ActionService(db)
            with db.session() as session:
                store_id = session.scalar(select(Store.id).where(Store.name == STORE))
            assert store_id is not None
            label = f"tau:{task.get('split', '')}:{task.get('task_index', '')}"
            calls = [
                apply_tool_call(service, store_id, a["name"], a.get("arguments") or {},
                                user_id=task.get("user_id"), conversation_id=label[:40])
                for a in task.get("actions") or []
            ]
            return Replay(task, export_state(db), calls)
        finally:
            _drop(db)

    def score(self, task: dict[str, Any], actual: dict[str, Any]) -> Score:
        """τ-bench's reward: the actual state must equal the expected actions' state."""
        expected = self.replay(task)
        diffs = [] if state_hash(expected.state) == state_hash(actual) else compare_states(
            expected.state, actual)
        return Score(1.0 if not diffs else 0.0, diffs, expected)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _importer_digest() -> str:
    """A short digest of the τ importer and the store writer (what a template holds)."""
    from knowledge_base.importers import tau_retail, writer

    source = "".join(Path(str(m.__file__)).read_text(encoding="utf-8")
                     for m in (tau_retail, writer))
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def export_state(db: Database, store: str = STORE) -> dict[str, Any]:
    """The τ-format state of ``store`` in ``db`` (users, orders, products)."""
    from knowledge_base.importers.tau_retail import export_store
    from knowledge_base.stores import get_store

    with db.session() as session:
        return export_store(session, get_store(session, store))


def load_tasks(dataset: Path, split: str) -> list[dict[str, Any]]:
    path = Path(dataset) / f"tasks_{split}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite database (WAL included) with the backup API."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def _drop(db: Database) -> None:
    path = db.url.split("///", 1)[-1]
    db.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
