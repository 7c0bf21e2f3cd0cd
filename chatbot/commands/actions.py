"""``chatbot actions``: order-action settings per store, the audit log, agent approvals, and
the τ-bench replay check. See docs/actions.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from chatbot.settings import Settings


def _database(ctx: click.Context):  # type: ignore[no-untyped-def]
    from chatbot.storage.db import Database

    settings: Settings = ctx.obj.settings
    return Database(settings.database_url)


def _store_id(db: Any, name: str) -> int:
    from knowledge_base.stores import get_store

    with db.session() as session:
        return int(get_store(session, name).id)


@click.group()
def actions() -> None:
    """Order actions (cancel, modify, return, exchange): settings, audit log, approvals.

    \b
    Examples:
      chatbot actions config --store demo
      chatbot actions config --store demo --set cancel_order=approval --set return_items=off
      chatbot actions config --store tau --policy return_window_days=30
      chatbot actions config --store tau --identify-by email,name_zip
      chatbot actions log --store tau --order '#W2611340'
      chatbot actions pending --store demo
      chatbot actions approve act_... --store demo --agent ana@shop.example
      chatbot actions tau-replay --split dev
    """


@actions.command("config")
@click.option("--store", "store_name", required=True, help="Store name or widget key.")
@click.option("--set", "assignments", multiple=True, metavar="KIND=MODE",
              help="Set a kind to auto, approval or off (repeatable).")
@click.option("--policy", "policy_items", multiple=True, metavar="KEY=VALUE",
              help="Set a policy rule; VALUE is JSON (30, null, [\"pending\"]) or plain text "
                   "(repeatable).")
@click.option("--identify-by", "identify", default=None, metavar="METHOD[,METHOD]",
              help="How a shopper who is not signed in is identified, in order: "
                   "order_email (order number + checkout email), email (the account's "
                   "email), name_zip (first and last name + zip code).")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@click.pass_context
def config_command(ctx: click.Context, store_name: str, assignments: tuple[str, ...],
                   policy_items: tuple[str, ...], identify: str | None, as_json: bool) -> None:
    """Show (or set) how each action kind runs in a store: auto, approval or off, and how
    the store identifies shoppers who are not signed in.

    \b
    auto      the shopper's yes executes it
    approval  the shopper's yes sends it to an agent, who approves or rejects it
    off       the bot does not offer it (it hands over to a human instead)
    """
    from chatbot.actions.service import get_config, get_identify_by, set_modes

    modes: dict[str, str] = {}
    for item in assignments:
        kind, sep, mode = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KIND=MODE, got {item!r}", param_hint="--set")
        modes[kind.strip()] = mode.strip()
    policy: dict[str, Any] = {}
    for item in policy_items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--policy")
        try:
            policy[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            policy[key.strip()] = raw
    methods = None
    if identify is not None:
        methods = [m.strip() for m in identify.split(",") if m.strip()]
    db = _database(ctx)
    try:
        store_id = _store_id(db, store_name)
        changing = bool(modes or policy) or methods is not None
        config = set_modes(db, store_id, modes, actor="agent", actor_id="cli", policy=policy,
                           identify=methods) if changing else get_config(db, store_id)
        identify_by = get_identify_by(db, store_id)
    finally:
        db.dispose()
    from dataclasses import asdict

    policy = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config.policy).items()}
    if as_json:
        click.echo(json.dumps({"store": store_name, "modes": config.modes, "policy": policy,
                               "identify_by": list(identify_by)}, indent=2))
        return
    click.echo(f"Shoppers who are not signed in are identified by: {', '.join(identify_by)}")
    click.echo(f"Order actions in store {store_name!r}:")
    for kind, mode in config.modes.items():
        click.echo(f"  {kind:<24} {mode}")
    click.echo("Policy:")
    for key, value in policy.items():
        click.echo(f"  {key:<28} {json.dumps(value)}")


@actions.command("log")
@click.option("--store", "store_name", required=True, help="Store name or widget key.")
@click.option("--order", "order", default=None, help="Only this order number.")
@click.option("--action", "action_id", default=None, help="Only this action id.")
@click.option("--limit", default=200, show_default=True, help="The newest N lines.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines with before/after.")
@click.pass_context
def log_command(ctx: click.Context, store_name: str, order: str | None,
                action_id: str | None, limit: int, as_json: bool) -> None:
    """The append-only audit log: who did what to which order, with the policy result."""
    from chatbot.actions.service import audit_log

    db = _database(ctx)
    try:
        rows = audit_log(db, _store_id(db, store_name), order=order, action_id=action_id,
                         limit=limit)
    finally:
        db.dispose()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        click.echo("No audit entries.")
        return
    for row in rows:
        who = row["actor"] + (f":{row['actor_id']}" if row["actor_id"] else "")
        click.echo(f"{row['time']}  {row['event']:<17} {row['kind'] or '-':<22} "
                   f"{row['order'] or '-':<11} {who:<16} {row['summary']}")


@actions.command("pending")
@click.option("--store", "store_name", required=True, help="Store name or widget key.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def pending_command(ctx: click.Context, store_name: str, as_json: bool) -> None:
    """Actions the shopper confirmed that wait for an agent's approval."""
    from chatbot.actions.service import ActionService

    db = _database(ctx)
    try:
        rows = ActionService(db).awaiting_approval(_store_id(db, store_name))
    finally:
        db.dispose()
    if as_json:
        click.echo(json.dumps([{**p.to_wire(), "order": p.order_number} for p in rows],
                              indent=2))
        return
    for p in rows:
        click.echo(f"{p.id}  {p.kind:<22} {p.order_number:<11} {p.summary}")
    if not rows:
        click.echo("Nothing awaits approval.")


@actions.command("approve")
@click.argument("action_id")
@click.option("--store", "store_name", required=True)
@click.option("--agent", required=True, help="Who approves (recorded in the audit log).")
@click.pass_context
def approve_command(ctx: click.Context, action_id: str, store_name: str, agent: str) -> None:
    """Approve an action awaiting approval: checked again, then executed. The shopper's
    conversation gets the outcome and a short message, as from the console."""
    from chatbot.actions.service import ActionService
    from chatbot.server.actions import tell_conversation

    db = _database(ctx)
    try:
        store_id = _store_id(db, store_name)
        service = ActionService(db)
        conversation = service.get(action_id, store_id=store_id).conversation_id
        outcome = service.approve(action_id, store_id=store_id, agent=agent)
        tell_conversation(db, store_id, conversation, outcome, "approved")
    finally:
        db.dispose()
    click.echo(f"{outcome.status}: {outcome.reason or outcome.summary}")


@actions.command("reject")
@click.argument("action_id")
@click.option("--store", "store_name", required=True)
@click.option("--agent", required=True)
@click.option("--reason", default="", help="Told to the shopper.")
@click.pass_context
def reject_command(ctx: click.Context, action_id: str, store_name: str, agent: str,
                   reason: str) -> None:
    """Reject an action awaiting approval (nothing is changed); the shopper is told."""
    from chatbot.actions.service import ActionService
    from chatbot.server.actions import tell_conversation

    db = _database(ctx)
    try:
        store_id = _store_id(db, store_name)
        service = ActionService(db)
        conversation = service.get(action_id, store_id=store_id).conversation_id
        outcome = service.reject(action_id, store_id=store_id, agent=agent, reason=reason)
        tell_conversation(db, store_id, conversation, outcome, "rejected")
    finally:
        db.dispose()
    click.echo(f"{outcome.status}: {outcome.reason}")


@actions.command("tau-replay")
@click.option("--split", type=click.Choice(["dev", "train"]), default="dev", show_default=True)
@click.option("--dataset", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default=None, help="The τ-bench retail folder (default: ../shared/datasets/"
                                 "tau_retail next to the repository).")
@click.option("--limit", type=int, default=None, help="Only the first N tasks.")
@click.option("--json", "as_json", is_flag=True)
def tau_replay_command(split: str, dataset: Path | None, limit: int | None,
                       as_json: bool) -> None:
    """Replay the expected actions of τ-bench tasks through our executors.

    Each task runs on a fresh import of the τ store; a task passes when every expected
    call is accepted and executed (the state τ-bench's scorer compares against).
    """
    from chatbot.actions.tau import TauReplayer, load_tasks

    folder = dataset or Path(__file__).resolve().parents[3] / "shared" / "datasets" / "tau_retail"
    tasks = load_tasks(folder, split)[:limit]
    replayer = TauReplayer(folder)
    failed = []
    try:
        with click.progressbar(tasks, label=f"replaying {split}") as bar:
            for task in bar:
                replay = replayer.replay(task)
                if not replay.ok:
                    failed.append({"task_index": task["task_index"], "calls": [
                        {"name": c.name, "status": c.status, "reason": c.reason}
                        for c in replay.calls if not c.ok]})
    finally:
        replayer.close()
    summary = {"split": split, "tasks": len(tasks), "replayed": len(tasks) - len(failed),
               "failed": failed}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{summary['replayed']}/{len(tasks)} {split} tasks replay cleanly")
    for f in failed:
        click.echo(f"  task {f['task_index']}: {f['calls']}")
