"""``chatbot kb``: import, export and inspect a store's knowledge base."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from chatbot.settings import Settings

# Subcommands that live in other modules, loaded on first use (like the top-level group).
EXTERNAL: dict[str, str] = {
    "search": "chatbot.commands.kb_search:search",
}

FORMAT_CHOICES = ("json", "tau-retail", "shopify-csv")


class _KbGroup(click.Group):
    """The ``kb`` group: local commands plus lazily imported ones from :data:`EXTERNAL`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(name for name, target in EXTERNAL.items() if _module_exists(target))
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        target = EXTERNAL.get(cmd_name)
        if target is None or not _module_exists(target):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


def _module_exists(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


def _database(ctx: click.Context):  # type: ignore[no-untyped-def]
    from chatbot.storage.db import Database

    settings: Settings = ctx.obj.settings
    return Database(settings.database_url)


@click.group(cls=_KbGroup)
def kb() -> None:
    """Import, export and inspect store data (catalogue, articles, customers, orders).

    \b
    Examples:
      chatbot kb demo
      chatbot kb import --format tau-retail ../shared/datasets/tau_retail --store tau
      chatbot kb import --format shopify-csv products_export.csv --store myshop
      chatbot kb export --store tau -o tau.json
      chatbot kb stats --store tau
      chatbot kb search --store demo "how long does shipping take"

    Formats and import rules: docs/store-format.md.
    """


@kb.command("import")
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), required=True,
              help="Source format: our JSON store file (.json or .json.gz), a tau-bench "
                   "retail folder, or a Shopify product CSV export.")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--store", "store_name", required=True,
              help="Store to import into; created (widget key = name) when missing.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def import_command(ctx: click.Context, fmt: str, path: Path, store_name: str,
                   progress: bool | None, as_json: bool) -> None:
    """Import PATH into a store. Re-running with the same file changes nothing.

    The whole file is checked before anything is written, and everything is written
    in one transaction: a broken file reports its file, record or line, and reason,
    and leaves the store as it was.

    \b
    Examples:
      chatbot kb import --format json knowledge_base/demo/store.json.gz --store demo
      chatbot kb import --format tau-retail ../shared/datasets/tau_retail --store tau
      chatbot kb import --format shopify-csv products_export.csv --store myshop
    """
    from knowledge_base.importers import import_path

    show = sys.stderr.isatty() if progress is None else progress
    db = _database(ctx)
    try:
        started = time.perf_counter()
        summary = import_path(db, fmt, path, store_name, progress=show)
        elapsed = time.perf_counter() - started
    finally:
        db.dispose()
    if as_json:
        click.echo(json.dumps({**summary.as_dict(), "seconds": round(elapsed, 3)}, indent=2))
        return
    click.echo(f"Imported {path} ({fmt}) into store {store_name!r} in {elapsed:.1f} s")
    _print_summary(summary.as_dict())


def _print_summary(summary: dict[str, Any]) -> None:
    click.echo(f"  {'':<10} {'created':>8} {'updated':>8} {'unchanged':>10}")
    for name in ("articles", "products", "variants", "customers", "orders"):
        row = summary[name]
        click.echo(
            f"  {name:<10} {row['created']:>8} {row['updated']:>8} {row['unchanged']:>10}"
        )


@kb.command("export")
@click.option("--store", "store_name", required=True, help="Store name or widget key.")
@click.option("--format", "fmt", type=click.Choice(("json", "tau-retail")), default="json",
              show_default=True,
              help="Our JSON store file, or a tau-bench retail folder (users.json, "
                   "orders.json, products.json).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="File to write (default: standard output; a .gz name is gzipped); "
                   "with --format tau-retail, the folder to write (required).")
@click.pass_context
def export_command(ctx: click.Context, store_name: str, fmt: str, output: Path | None) -> None:
    """Export a whole store as one JSON store file (see docs/store-format.md).

    Importing the file with ``--format json`` into another store gives the same store.
    Secrets (the identity signing key) and the widget key are not exported.
    ``--format tau-retail`` writes tau-bench's three files, including what order actions
    wrote (cancel reasons, returns, exchanges, refunds, gift-card balances).

    \b
    Examples:
      chatbot kb export --store demo -o demo.json
      chatbot kb export --store tau | jq '.orders | length'
      chatbot kb export --format tau-retail --store tau -o /tmp/tau-state
    """
    import gzip

    if fmt == "tau-retail":
        _export_tau(ctx, store_name, output)
        return
    if output is not None and output.is_dir():
        raise click.BadParameter(f"{output} is a folder", param_hint="-o")

    from knowledge_base.importers.json_format import dumps, export_store
    from knowledge_base.stores import get_store

    db = _database(ctx)
    try:
        with db.session() as session:
            text = dumps(export_store(session, get_store(session, store_name)))
    finally:
        db.dispose()
    if output is None:
        click.echo(text, nl=False)
        return
    data = text.encode("utf-8")
    if output.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc
    click.echo(f"Wrote store {store_name!r} to {output} ({len(data):,} bytes)", err=True)


def _export_tau(ctx: click.Context, store_name: str, output: Path | None) -> None:
    from knowledge_base.importers.tau_retail import export_store, write_folder
    from knowledge_base.stores import get_store

    if output is None:
        raise click.BadParameter("--format tau-retail needs -o DIR", param_hint="-o")
    if output.exists() and not output.is_dir():
        raise click.BadParameter(f"{output} is not a folder", param_hint="-o")
    db = _database(ctx)
    try:
        with db.session() as session:
            data = export_store(session, get_store(session, store_name))
    finally:
        db.dispose()
    try:
        write_folder(data, output)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc
    click.echo(
        f"Wrote store {store_name!r} to {output} ({len(data['users']):,} users, "
        f"{len(data['orders']):,} orders, {len(data['products']):,} products)", err=True,
    )


@kb.command("stats")
@click.option("--store", "store_name", required=True, help="Store name or widget key.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def stats_command(ctx: click.Context, store_name: str, as_json: bool) -> None:
    """Count a store's customers, orders (by status), products, articles and more.

    \b
    Examples:
      chatbot kb stats --store tau
      chatbot kb stats --store demo --json
    """
    from knowledge_base.stores import get_store, store_stats

    db = _database(ctx)
    try:
        with db.session() as session:
            stats = store_stats(session, get_store(session, store_name))
    finally:
        db.dispose()
    if as_json:
        click.echo(json.dumps(stats, indent=2, ensure_ascii=False))
        return
    click.echo(f"Store {stats['store']} ({stats['title']}), widget key {stats['widget_key']}")
    rows: list[tuple[str, int, dict[str, int] | None]] = [
        ("customers", stats["customers"], None),
        ("orders", stats["orders"], stats["orders_by_status"]),
        ("order items", stats["order_items"], None),
        ("products", stats["products"], None),
        ("variants", stats["variants"], {"available": stats["variants_available"]}),
        ("articles", stats["articles"], stats["articles_by_kind"]),
        ("shipments", stats["shipments"], stats["shipments_by_status"]),
        ("payments", stats["payments"], None),
        ("refunds", stats["refunds"], None),
        ("returns", stats["returns"], stats["returns_by_status"]),
    ]
    for label, value, detail in rows:
        extra = ", ".join(f"{k}: {v:,}" for k, v in detail.items()) if detail else ""
        click.echo(f"  {label:<12} {value:>7,}" + (f"   ({extra})" if extra else ""))


@kb.command("stores")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
def stores_command(ctx: click.Context, as_json: bool) -> None:
    """List the stores in the database with their widget keys.

    \b
    Example:
      chatbot kb stores
    """
    from knowledge_base.stores import list_stores

    db = _database(ctx)
    try:
        with db.session() as session:
            rows = [
                {"name": s.name, "widget_key": s.widget_key, "title": s.title}
                for s in list_stores(session)
            ]
    finally:
        db.dispose()
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for row in rows:
        click.echo(f"{row['name']:<20} key={row['widget_key']:<20} {row['title']}")


@kb.command("demo")
@click.pass_context
def demo_command(ctx: click.Context) -> None:
    """Import the shipped demo store (Northwind Outfitters) as store ``demo``.

    Idempotent: running it again changes nothing.

    \b
    Example:
      chatbot kb demo && chatbot kb stats --store demo
    """
    from knowledge_base.demo import import_demo_store

    db = _database(ctx)
    try:
        store = import_demo_store(db, progress=sys.stderr.isatty())
    finally:
        db.dispose()
    click.echo(
        f"Demo store {store.name!r} ({store.title}) is ready; widget key {store.widget_key!r}"
    )
