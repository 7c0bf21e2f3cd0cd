"""``chatbot actions`` and ``chatbot kb export --format tau-retail`` end to end on a SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from chatbot.actions.service import ActionService
from chatbot.cli import cli
from chatbot.storage.db import Database
from knowledge_base.models import Customer, Store

REPO = Path(__file__).resolve().parents[2]
TAU = REPO.parent / "shared" / "datasets" / "tau_retail"

pytestmark = pytest.mark.skipif(not (TAU / "orders.json").exists(), reason="no ../shared τ data")


@pytest.fixture()
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'chatbot.db'}"

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--database-url", url,
                                        *args])

    imported = invoke("kb", "import", "--format", "tau-retail", str(TAU), "--store", "tau")
    assert imported.exit_code == 0, imported.output
    return invoke, url


def test_config_set_and_show(env) -> None:  # type: ignore[no-untyped-def]
    run, _ = env
    shown = run("actions", "config", "--store", "tau")
    assert shown.exit_code == 0, shown.output
    assert "cancel_order             auto" in shown.output
    changed = run("actions", "config", "--store", "tau", "--set", "cancel_order=approval",
                  "--set", "return_items=off", "--json")
    assert changed.exit_code == 0, changed.output
    modes = json.loads(changed.output)["modes"]
    assert modes["cancel_order"] == "approval" and modes["return_items"] == "off"
    assert modes["exchange_items"] == "auto"
    again = json.loads(run("actions", "config", "--store", "tau", "--json").output)
    assert again["modes"] == modes
    policy = run("actions", "config", "--store", "tau", "--policy", "return_window_days=30",
                 "--policy", "cancel_reasons=null", "--policy", "refund_timing=today", "--json")
    assert policy.exit_code == 0, policy.output
    got = json.loads(policy.output)
    assert got["policy"]["return_window_days"] == 30 and got["policy"]["cancel_reasons"] is None
    assert got["policy"]["refund_timing"] == "today" and got["modes"] == modes
    bad_policy = run("actions", "config", "--store", "tau", "--policy", "no_such_rule=1")
    assert bad_policy.exit_code != 0 and "unknown action policy setting" in bad_policy.output
    bad = run("actions", "config", "--store", "tau", "--set", "cancel_order=sometimes")
    assert bad.exit_code != 0 and "unknown action mode 'sometimes'" in bad.output
    log = run("actions", "log", "--store", "tau", "--json")
    assert json.loads(log.output.splitlines()[-1])["event"] == "config"


def test_identify_by_comes_from_the_tau_import_and_is_set_from_the_cli(env) -> None:  # type: ignore[no-untyped-def]
    run, _ = env
    # τ's policy (wiki.md): a customer is found by email, or by name + zip code.
    imported = json.loads(run("actions", "config", "--store", "tau", "--json").output)
    assert imported["identify_by"] == ["email", "name_zip"]
    shown = run("actions", "config", "--store", "tau")
    assert "identified by: email, name_zip" in shown.output
    changed = run("actions", "config", "--store", "tau", "--identify-by", "order_email, email",
                  "--json")
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.output)["identify_by"] == ["order_email", "email"]
    for bad in ("phone", "", "email,email"):
        refused = run("actions", "config", "--store", "tau", "--identify-by", bad)
        assert refused.exit_code != 0 and "identify_by" in refused.output, bad
    line = json.loads(run("actions", "log", "--store", "tau", "--json").output.splitlines()[-1])
    assert line["event"] == "config" and line["summary"] == "identify_by=order_email,email"
    assert line["before"]["identify_by"] == ["email", "name_zip"]
    # Importing the folder again fills settings the store lacks, never the operator's.
    again = run("kb", "import", "--format", "tau-retail", str(TAU), "--store", "tau")
    assert again.exit_code == 0, again.output
    kept = json.loads(run("actions", "config", "--store", "tau", "--json").output)
    assert kept["identify_by"] == ["order_email", "email"]


def test_log_pending_approve_and_tau_export(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run, url = env
    assert run("actions", "config", "--store", "tau", "--set",
               "cancel_order=approval").exit_code == 0
    db = Database(url)
    try:
        with db.session() as s:
            store_id = s.scalar(select(Store.id).where(Store.name == "tau"))
            harper = s.scalar(select(Customer.id).where(
                Customer.source_id == "harper_kovacs_8617"))
        service = ActionService(db)
        p = service.propose(store_id, "cancel_order",
                            {"order": "#W9093821", "reason": "no longer needed"},
                            customer_id=harper, conversation_id="c_cli")
        assert service.execute(p.id, store_id=store_id).status == "awaiting_approval"
    finally:
        db.dispose()
    pending = run("actions", "pending", "--store", "tau")
    assert p.id in pending.output and "#W9093821" in pending.output
    approved = run("actions", "approve", p.id, "--store", "tau", "--agent", "ana@shop.example")
    assert approved.exit_code == 0 and approved.output.startswith("executed")
    again = run("actions", "approve", p.id, "--store", "tau", "--agent", "ana@shop.example")
    assert again.exit_code != 0 and "not awaiting approval" in again.output

    log = run("actions", "log", "--store", "tau", "--order", "W9093821")
    lines = log.output.splitlines()
    assert [line.split()[1] for line in lines] == ["proposed", "awaiting_approval", "executed"]
    assert "agent:ana@shop.example" in lines[-1]
    rows = [json.loads(x) for x in run("actions", "log", "--store", "tau", "--order",
                                       "#W9093821", "--json").output.splitlines()]
    assert rows[-1]["before"]["order"]["status"] == "pending"
    assert rows[-1]["after"]["order"]["status"] == "cancelled"

    out = tmp_path / "tau-out"
    exported = run("kb", "export", "--format", "tau-retail", "--store", "tau", "-o", str(out))
    assert exported.exit_code == 0, exported.output
    orders = json.loads((out / "orders.json").read_text())
    source = json.loads((TAU / "orders.json").read_text())
    assert orders["#W9093821"]["status"] == "cancelled"
    assert orders["#W9093821"]["cancel_reason"] == "no longer needed"
    changed = {k for k in source if source[k] != orders[k]}
    assert changed == {"#W9093821"}
    for name in ("users", "products"):
        assert json.loads((out / f"{name}.json").read_text()) == json.loads(
            (TAU / f"{name}.json").read_text())
    no_dir = run("kb", "export", "--format", "tau-retail", "--store", "tau")
    assert no_dir.exit_code != 0 and "needs -o DIR" in no_dir.output


def test_tau_replay_command(env) -> None:  # type: ignore[no-untyped-def]
    run, _ = env
    result = run("actions", "tau-replay", "--split", "dev", "--limit", "3", "--dataset",
                 str(TAU), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["tasks"] == 3 and summary["replayed"] == 3 and summary["failed"] == []
