"""``chatbot kb search``: ranked articles and products of one store for a shopper's question."""

from __future__ import annotations

import json
import sys
import textwrap

import click

from chatbot.settings import Settings


@click.command("search")
@click.option("--store", "store_name", required=True, help="Store name or widget key.")
@click.option("-k", "k", type=click.IntRange(1, 100), default=5, show_default=True,
              help="How many hits (distinct articles/products) to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
@click.option("--sync/--no-sync", default=True, show_default=True,
              help="Bring the store's index up to date first (embeds only what changed).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar while embedding (default: when stderr is a terminal).")
@click.argument("query", nargs=-1, required=True)
@click.pass_context
def search(ctx: click.Context, store_name: str, k: int, as_json: bool, sync: bool,
           progress: bool | None, query: tuple[str, ...]) -> None:
    """Search a store's FAQ, policies and catalogue for QUERY (hybrid dense + keyword).

    The store's index lives under the data dir (indexes/store-<id>/). It is built on
    first use and updated incrementally: only new or edited articles and products are
    embedded again. Orders are never indexed.

    \b
    Examples:
      chatbot kb search --store demo "how long does shipping take"
      chatbot kb search --store demo -k 3 --json "can i return worn boots"
      chatbot kb search --store demo NW-KPR-YEL-S
    """
    from chatbot.storage.db import Database
    from knowledge_base.embeddings import Embedder
    from knowledge_base.retrieval import Retriever
    from knowledge_base.stores import get_store

    settings: Settings = ctx.obj.settings
    text = " ".join(query).strip()
    if not text:
        raise click.BadParameter("the query is empty", param_hint="QUERY")
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            store = get_store(session, store_name)
            store_id, store_label = store.id, store.name
        retriever = Retriever(db, settings.index_dir, Embedder())
        stats = None
        index = retriever.store_index(store_id)
        if sync or not index.exists():
            show = sys.stderr.isatty() if progress is None else progress
            stats = retriever.sync(store_id, progress=show)
            if stats.changed:
                click.echo(
                    f"Index of store {store_label!r} updated: {stats.added} added, "
                    f"{stats.updated} updated, {stats.removed} removed, {stats.unchanged} "
                    f"unchanged ({stats.total} chunks, {stats.seconds:.1f} s)",
                    err=True,
                )
        hits = retriever.search(store_id, text, k=k)
    finally:
        db.dispose()

    if as_json:
        click.echo(json.dumps(
            {
                "store": store_label,
                "query": text,
                "hits": [
                    {"kind": h.kind, "id": h.id, "title": h.title, "score": h.score,
                     "url": h.url, "snippet": h.snippet}
                    for h in hits
                ],
            },
            indent=2,
            ensure_ascii=False,
        ))
        return
    if not hits:
        click.echo(f"No matches in store {store_label!r}.")
        return
    for rank, hit in enumerate(hits, 1):
        click.echo(f"{rank}. [{hit.kind}] {hit.id}  score {hit.score:.3f}  {hit.title}")
        snippet = textwrap.shorten(" ".join(hit.snippet.split()), width=240, placeholder=" ...")
        click.echo(textwrap.indent(textwrap.fill(snippet, width=96), "   "))
        if hit.url:
            click.echo(f"   {hit.url}")
