"""Order actions end to end on the wire with the real answering pipeline (issue #19).

The shipped demo store, the real ChatServer and the real Pipeline; the language model is
replaced by ``SilentEngine`` (it generates nothing: every action turn is code's fixed
reply, the same with the model), so this runs in seconds. A signed-in customer asks to
cancel a pending order, gets ``done.action``, answers with a ``confirm`` frame (or in
words), and the order changes exactly once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from chatbot import identity
from chatbot.settings import Settings
from chatbot.storage.db import Database
from knowledge_base.demo import ensure_demo_store
from knowledge_base.models import Order
from tests.integration.server_support import chat_client

pytestmark = pytest.mark.slow


@asynccontextmanager
async def pipeline_server(tmp_path: Path) -> AsyncIterator[tuple[str, str, Database]]:
    """(socket url, the demo store's identity secret, the database)."""
    from chatbot.answering.pipeline import Pipeline
    from chatbot.evaluation.actions import SilentEngine
    from chatbot.server.app import ChatServer
    from chatbot.training.build import load_tokenizer
    from knowledge_base.retrieval import Retriever

    base = Settings.from_env()
    if not base.model_path.exists():
        pytest.skip(f"no tokenizer: the model is not pulled ({base.model_path})")
    settings = dataclasses.replace(base, data_dir=tmp_path,
                                   database_url=f"sqlite:///{tmp_path / 'chat.db'}")
    db = Database(settings.database_url)
    store = ensure_demo_store(db)
    engine = SilentEngine(load_tokenizer(settings.model_path))
    pipeline = Pipeline(db, Retriever(db, settings.index_dir), engine, settings)
    app = ChatServer(settings, db, pipeline)
    port = await app.start(host="127.0.0.1", port=0)
    try:
        yield f"ws://127.0.0.1:{port}/ws/chat", store.identity_secret, db
    finally:
        await app.stop(drain_s=0)
        db.dispose()


def status_of(db: Database, number: str) -> str:
    with db.session() as session:
        return str(session.scalars(select(Order.status).where(Order.number == number)).one())


async def test_confirm_frame_runs_the_proposal_once(tmp_path: Path) -> None:
    async with pipeline_server(tmp_path) as (url, secret, db), chat_client(url) as c:
        await c.hello(identity=identity.sign(secret, "mei_nelson_9261"))
        done = (await c.ask("Please cancel order #NW10966, I no longer need it."))[-1]
        action = done["action"]
        assert action["status"] == "proposed" and action["kind"] == "cancel_order"
        assert done["text"].startswith(action["summary"])
        assert status_of(db, "#NW10966") == "pending", "nothing changes before the yes"

        await c.send(type="confirm", action_id=action["id"], accept=True)
        frames = await c.until(
            lambda f: f["type"] == "done" and f["in_reply_to"] == f"k_{action['id']}")
        event = next(f for f in frames if f["type"] == "action")
        assert (event["id"], event["status"], event["seq"]) == (
            action["id"], "executed", frames[-1]["seq"] - 1)
        assert frames[-1]["text"].startswith("Done. Order #NW10966 is cancelled.")
        assert status_of(db, "#NW10966") == "cancelled"

        # The same id again: an error, nothing runs twice.
        await c.send(type="confirm", action_id=action["id"], accept=True)
        err = (await c.until("error"))[-1]
        assert (err["code"], err["ref"]) == ("action_used", action["id"])


async def test_keep_my_order_and_an_answer_in_words(tmp_path: Path) -> None:
    async with pipeline_server(tmp_path) as (url, secret, db), chat_client(url) as c:
        await c.hello(identity=identity.sign(secret, "mei_nelson_9261"))
        first = (await c.ask("Please cancel order #NW10966, I no longer need it."))[-1]["action"]
        await c.send(type="confirm", action_id=first["id"], accept=False)
        frames = await c.until("done")
        assert next(f for f in frames if f["type"] == "action")["status"] == "declined"
        assert status_of(db, "#NW10966") == "pending"

        # Asked again and answered in words: the same action event.
        second = (await c.ask("Actually, please cancel order #NW10966, I no longer need it."))
        action = second[-1]["action"]
        assert action["id"] != first["id"]
        frames = await c.ask("Yes, please go ahead.")
        event = next(f for f in frames if f["type"] == "action")
        assert (event["id"], event["status"]) == (action["id"], "executed")
        assert status_of(db, "#NW10966") == "cancelled"


async def test_a_new_request_ends_the_open_proposal_with_an_action_event(tmp_path: Path) -> None:
    async with pipeline_server(tmp_path) as (url, secret, db), chat_client(url) as c:
        await c.hello(identity=identity.sign(secret, "mei_nelson_9261"))
        first = (await c.ask("Please cancel order #NW10966, I no longer need it."))[-1]["action"]
        # No yes or no: the shopper asks for something new. The open proposal is declined
        # (a late yes can never run it) and the shopper's card says so.
        frames = await c.ask("Actually, please change the shipping address of my order "
                             "#NW10966 to 12 Elm Street, Springfield, IL 62704, USA.")
        event = next(f for f in frames if f["type"] == "action")
        assert (event["id"], event["status"]) == (first["id"], "declined")
        done = frames[-1]
        assert event["seq"] < done["seq"]
        assert done["action"]["kind"] == "modify_order_address"
        # Confirming the old card now changes nothing.
        await c.send(type="confirm", action_id=first["id"], accept=True)
        err = (await c.until("error"))[-1]
        assert (err["code"], err["ref"]) == ("action_used", first["id"])
        # A later reply does not tell it again.
        later = await c.ask("no, keep it")
        assert [(f["id"], f["status"]) for f in later if f["type"] == "action"] == [
            (done["action"]["id"], "declined")]
        assert status_of(db, "#NW10966") == "pending"


async def test_a_request_the_bot_cannot_do_reaches_an_agent_with_a_summary(
    tmp_path: Path,
) -> None:
    """Out of scope (a price match on an order: no action does it) -> a fixed reply, the
    handoff, and in the console's inbox a summary naming the customer, the order and
    what they wanted; nothing changes on the order."""
    from types import SimpleNamespace

    from tests.integration.agent_support import add_agent, agent_client, token_for

    async with pipeline_server(tmp_path) as (url, secret, db), chat_client(url) as c:
        await c.hello(identity=identity.sign(secret, "mei_nelson_9261"))
        frames = await c.ask("Can you price match my order #NW10966? The jacket is $20 "
                             "cheaper at another shop.")
        done = frames[-1]
        assert done["handoff"] is True and "passing your request to a person" in done["text"]
        await c.until(lambda f: f["type"] == "status" and f["kind"] == "handoff_requested")
        add_agent(db, "ana@shop.example", ["demo"], name="Ana")
        server = SimpleNamespace(port=int(url.split(":")[2].split("/")[0]))
        async with agent_client(server, token_for(db, "ana@shop.example")) as agent:  # type: ignore[arg-type]
            await agent.send(type="subscribe_inbox", store="demo", filter="waiting")
            inbox = (await agent.until("inbox"))[-1]
        (row,) = inbox["conversations"]
        summary = row["summary"]["text"]
        assert summary.startswith("Handed off: Mei Nelson (mei.nelson3@example.net) wants a "
                                  "price match (order #NW10966)"), summary
        assert "cheaper at another shop" in summary
        assert status_of(db, "#NW10966") == "pending"
