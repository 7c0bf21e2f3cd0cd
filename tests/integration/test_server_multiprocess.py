"""Two servers on one database stand in for two processes: the log and the poller connect them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chatbot.conversations.ownership import Action
from chatbot.server.app import ChatServer
from tests.fakes import FakeAnswerer
from tests.integration.server_support import conversation_ref, running_server


async def _second_server(first: ChatServer, fake: FakeAnswerer) -> ChatServer:
    second = ChatServer(
        first.settings,
        first.db,
        fake,
        static_dir=first.static_dir,
        flush_interval_s=0.005,
        poll_interval_s=0.05,
    )
    await second.start(host="127.0.0.1", port=0)
    return second


async def test_agent_on_another_process_reaches_the_shopper_and_silences_the_bot(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as srv:
        srv.app.poller = None  # the first server gets its own poller below
        from chatbot.conversations.poller import EventPoller

        poll = asyncio.create_task(EventPoller(srv.db, srv.app.hub, 0.05).run())
        other = await _second_server(srv.app, FakeAnswerer())
        try:
            srv.fake.queue([f"b{i} " for i in range(200)], delay_s=0.01)
            async with srv.client() as c:
                welcome = await c.hello()
                await c.send(type="message", id="m_1", text="long one")
                await c.until("token")
                # The takeover happens in the *other* process: no in-process cancel here.
                ref = conversation_ref(other, other.db, welcome["conversation_id"])
                await other.conversations.transition(
                    ref, Action.TAKE_OVER, agent_id=3, agent_name="Remote"
                )
                frames = await c.until("done", timeout=5)
                joined = next(f for f in frames if f.get("kind") == "agent_joined")
                assert frames[-1]["interrupted"] is True
                late = [f for f in frames if f["type"] == "token" and f["seq"] > joined["seq"]]
                assert late == []
                # A message written by the other process arrives live through the poller.
                ref = conversation_ref(other, other.db, welcome["conversation_id"])
                await other.conversations.add_agent_message(
                    ref, "Hello from far away", agent_id=3, agent_name="Remote"
                )
                msg = (await c.until("agent_message", timeout=3))[-1]
                assert msg["text"] == "Hello from far away"
                seqs = [
                    f["seq"]
                    for f in c.frames
                    if f["type"] in ("ack", "token", "done", "agent_message", "status")
                    and f.get("kind") not in ("thinking",)
                ]
                assert seqs == sorted(set(seqs))
        finally:
            poll.cancel()
            await other.stop(drain_s=0)
