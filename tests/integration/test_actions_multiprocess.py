"""The console's approval queue across server processes (issue #19).

Two ``chatbot serve`` processes share one database behind a load balancer: process A is a
real subprocess (``--poll-events``, the scripted fake answerer), process B a ChatServer in
this test process with its own hub and event poller. An agent's action on A that waits
for approval appears in the queue of an agent whose console is connected to B; a decision
made on B reaches the console and the shopper on A; a mode change on A reaches B. Nothing
crosses between the processes but the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from chatbot import identity
from chatbot.actions.service import set_modes
from chatbot.server.app import ChatServer
from chatbot.settings import Settings
from chatbot.storage.db import Database
from knowledge_base.demo import ensure_demo_store
from tests.fakes import FakeAnswerer
from tests.integration.agent_support import AgentClient, add_agent, token_for
from tests.integration.reliability_support import ServerProcess
from tests.integration.server_support import chat_client

pytestmark = pytest.mark.slow


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[Database, str]]:
    """The database both processes use: the demo store, cancellations need approval."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    db = Database(url)
    store = ensure_demo_store(db)
    set_modes(db, store.id, {"cancel_order": "approval"})
    add_agent(db, "ana@shop.example", ["demo"], name="Ana")
    add_agent(db, "root@shop.example", [], admin=True, name="Root")
    yield db, store.identity_secret
    db.dispose()


async def console(port: int, token: str) -> tuple[Any, AgentClient]:
    ws = await connect(f"ws://127.0.0.1:{port}/ws/agent").__aenter__()
    client = AgentClient(ws)
    await client.send(type="auth", token=token)
    await client.until("ready")
    await client.send(type="subscribe_inbox", store="demo")
    await client.until("inbox")
    await client.send(type="list_actions", store="demo")
    return ws, client


async def test_the_approval_queue_follows_changes_made_in_another_process(
    shared: tuple[Database, str], tmp_path: Path
) -> None:
    db, secret = shared
    (tmp_path / "a").mkdir()
    a = ServerProcess(tmp_path / "a", db.url, {"CHATBOT_FAKE_ANSWERER": "4:0.01"},
                      args=("--poll-events", "0.1"))
    await asyncio.to_thread(a.start)
    settings = Settings.from_env({"CHATBOT_HOME": str(tmp_path / "b")}, database_url=db.url)
    b = ChatServer(settings, Database(db.url), FakeAnswerer(), poll_interval_s=0.1)
    b_port = await b.start(host="127.0.0.1", port=0)
    sockets: list[Any] = []
    try:
        ws, ana = await console(b_port, token_for(db, "ana@shop.example"))  # on B
        sockets.append(ws)
        first = (await ana.until("actions"))[-1]
        assert first["pending"] == [] and first["modes"]["cancel_order"] == "approval"
        ws, root = await console(a.port, token_for(db, "root@shop.example"))  # on A
        sockets.append(ws)
        await root.until("actions")

        async with chat_client(a.url) as shopper:  # the shopper's socket is on A too
            welcome = await shopper.hello(identity=identity.sign(secret, "mei_nelson_9261"))
            conv_id = welcome["conversation_id"]
            await shopper.ask("hello")
            # On A, an agent cancels the order for the customer: the store wants approval.
            await root.send(type="propose_action", conversation_id=conv_id,
                            kind="cancel_order",
                            params={"order": "#NW10966", "reason": "no longer needed"})
            preview = (await root.until("action_preview"))[-1]["action"]
            await root.send(type="confirm_action", conversation_id=conv_id,
                            action_id=preview["id"], accept=True)
            ran = (await root.until("action_preview"))[-1]["action"]
            assert ran["status"] == "awaiting_approval"

            # B never saw that write, yet Ana's queue (on B) gets it by itself.
            queued = (await ana.until(lambda f: f["type"] == "actions" and f["pending"],
                                      timeout=5))[-1]
            assert [(r["id"], r["order"], r["conversation_id"]) for r in queued["pending"]] == [
                (preview["id"], "#NW10966", conv_id)]

            # Ana rejects it on B: the shopper (on A) is told, A's console queue empties.
            await ana.send(type="reject_action", store="demo", action_id=preview["id"],
                           reason="Please call us about this order.")
            told = await shopper.until(lambda f: f["type"] == "action"
                                       and f["status"] == "declined", timeout=5)
            assert told[-1]["reason"] == "Please call us about this order."
            emptied = await root.until(lambda f: f["type"] == "actions" and not f["pending"],
                                       timeout=5)
            assert emptied[-1]["pending"] == []

            # A mode change made on A reaches the console on B.
            await root.send(type="set_action_modes", store="demo",
                            modes={"cancel_order": "auto"})
            modes = await ana.until(lambda f: f["type"] == "actions"
                                    and f["modes"]["cancel_order"] == "auto", timeout=5)
            assert modes[-1]["pending"] == []
    finally:
        for ws in sockets:
            await ws.close()
        await b.stop(drain_s=0)
        b.db.dispose()
        await asyncio.to_thread(a.stop)
