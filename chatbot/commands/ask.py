"""``chatbot ask``: stream one grounded answer in the terminal, then its sources."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from typing import TYPE_CHECKING

import click

from chatbot.settings import Settings
from chatbot.types import AnswerRequest, ReplyDone, ReplyToken

if TYPE_CHECKING:
    from chatbot.answering.pipeline import Pipeline
    from chatbot.storage.db import Database

log = logging.getLogger(__name__)


@click.command()
@click.argument("question")
@click.option(
    "--store",
    default="demo",
    show_default=True,
    help="Store name or widget key ('demo' is created on first use).",
)
@click.option(
    "--customer",
    help="Answer as this signed-in customer (source id, email or database id). "
    "Without it you are a guest, who must verify with order number + email.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of streaming.")
@click.option("--no-adapter", is_flag=True, help="Use the base model without the LoRA adapter.")
@click.option("--seed", type=int, help="Random seed (replies are greedy, so only for sampling).")
@click.option("--max-new-tokens", type=click.IntRange(1, 1024), help="Longest reply in tokens.")
@click.pass_context
def ask(
    ctx: click.Context,
    question: str,
    store: str,
    customer: str | None,
    as_json: bool,
    no_adapter: bool,
    seed: int | None,
    max_new_tokens: int | None,
) -> None:
    """Ask the bot one question and stream its answer, then list the sources it used.

    The quickest way to try the bot: the first run creates the demo store, pulls the
    model and builds the search index (a minute or two); later runs take seconds.

    \b
    Examples:
      chatbot ask "how long does shipping take?"
      chatbot ask --store tau --customer james_li_5688 "where is my order #W2611340?"
      chatbot ask "where is #NW10001? my email is ana@example.com"
      chatbot ask --no-adapter --json "can I return worn shoes?"
    """
    root = logging.getLogger()
    if root.level == logging.INFO:
        # The terminal is the reply's screen here: progress INFO lines would interleave
        # with the streamed answer. -v (DEBUG) still shows everything.
        root.setLevel(logging.WARNING)
    settings: Settings = ctx.obj.settings.replace(max_new_tokens=max_new_tokens)
    if no_adapter:
        settings = dataclasses.replace(settings, adapter_path=None)
    question = question.strip()
    if not question:
        raise click.UsageError("the question is empty")
    if len(question) > settings.limits.max_message_chars:
        raise click.UsageError(
            f"the question is longer than {settings.limits.max_message_chars} characters"
        )
    done = asyncio.run(_ask(settings, store, customer, question, seed, as_json))
    if as_json:
        click.echo(json.dumps(_as_dict(done), indent=2, ensure_ascii=False))
    else:
        _print_sources(done)


async def _ask(
    settings: Settings,
    store_name: str,
    customer_ref: str | None,
    question: str,
    seed: int | None,
    as_json: bool,
) -> ReplyDone:
    from chatbot.storage.db import Database

    db = Database(settings.database_url)
    store_id, customer_id = _resolve(db, store_name, customer_ref)
    pipeline = _load(settings, db, store_id, progress=not as_json)
    await pipeline.start()
    try:
        request = AnswerRequest(store_id, question, customer_id=customer_id, seed=seed)
        done: ReplyDone | None = None
        async for event in pipeline.answer(request):
            if isinstance(event, ReplyToken) and not as_json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, ReplyDone):
                done = event
        if not as_json:
            sys.stdout.write("\n")
        assert done is not None
        return done
    finally:
        await pipeline.close()
        db.dispose()


def _resolve(db: Database, store_name: str, customer_ref: str | None) -> tuple[int, int | None]:
    """The store id (creating the demo store when asked for) and the customer id."""
    from knowledge_base.orders import find_customer
    from knowledge_base.stores import get_store

    if store_name == "demo":
        from knowledge_base.demo import ensure_demo_store

        ensure_demo_store(db)
    with db.sessions() as session:
        store = get_store(session, store_name)
        customer_id = None
        if customer_ref:
            customer_id = find_customer(session, store.id, customer_ref).id
        return store.id, customer_id


def _load(settings: Settings, db: Database, store_id: int, *, progress: bool) -> Pipeline:
    from chatbot.answering.pipeline import build_answerer
    from chatbot.engine.loader import ensure_model

    ensure_model(settings, progress=progress)
    pipeline = build_answerer(settings, db)
    pipeline.prepare(store_id, progress=progress)
    return pipeline


def _as_dict(done: ReplyDone) -> dict[str, object]:
    return {
        "reply": done.text,
        "sources": [dataclasses.asdict(s) for s in done.sources],
        "handoff": done.handoff,
        "reason": done.reason,
        "guard_fired": done.guard_fired,
        "verified_orders": sorted(done.verified_orders),
    }


def _print_sources(done: ReplyDone) -> None:
    if done.sources:
        click.secho("Sources:", dim=True)
        for source in done.sources:
            where = f"  {source.url}" if source.url else ""
            click.secho(f"  [{source.kind} {source.id}] {source.title}{where}", dim=True)
    if done.handoff:
        click.secho("(suggests a handoff to a person)", dim=True)
    if done.verified_orders:
        click.secho(f"(verified: {', '.join(sorted(done.verified_orders))})", dim=True)
    if done.guard_fired:
        click.secho(f"(grounding guard removed {done.guard_fired} claim(s))", dim=True)
