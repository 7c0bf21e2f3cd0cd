"""The console on PostgreSQL: sessions, inbox queries (window functions, ILIKE search, read
marks with savepoints), takeover mid-stream and notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.agent_support import add_agent, agent_client, quiet, token_for
from tests.integration.server_support import running_server, stored_seqs

pytestmark = pytest.mark.postgres


async def test_console_flow_on_postgres(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    async with running_server(tmp_path, database_url=pg_url) as srv:
        add_agent(srv.db, "ana@shop.example", ["demo"], name="Ana")
        srv.fake.queue([f"w{i} " for i in range(40)], delay_s=0.03)
        async with srv.client() as shopper, agent_client(
            srv, token_for(srv.db, "ana@shop.example")
        ) as ana:
            cid = (await shopper.hello())["conversation_id"]
            await ana.send(type="subscribe_inbox", store="demo", filter="all", q="100%_refund")
            assert (await ana.until("inbox"))[-1]["conversations"] == []
            await shopper.send(type="message", id="m1", text="Is a 100%_refund possible?")
            await shopper.until("token")
            await ana.send(type="subscribe_inbox", store="demo", filter="all", q="100%_refund")
            rows = (await ana.until("inbox"))[-1]["conversations"]
            assert [r["conversation_id"] for r in rows] == [cid] and rows[0]["unread"] == 1

            await ana.open(cid)
            await ana.act("take_over", cid)
            joined = await ana.event(lambda e: e.get("kind") == "agent_joined")
            await shopper.send(type="message", id="m2", text="hello?")
            await ana.act("note", cid, id="n1", text="internal only")
            await ana.act("send", cid, id="a1", text="Ana here.")
            frames = await shopper.until("agent_message")
            frames += await quiet(shopper, 0.5)
            assert not [f for f in frames if f["type"] == "token" and f["seq"] > joined["seq"]]
            assert all("internal only" not in str(f) for f in frames)
            log = stored_seqs(srv.db, cid)
            assert not [k for s, k, _ in log if k == "token" and s > joined["seq"]]

            await ana.act("mark_read", cid)
            await ana.act("mark_read", cid)
            row = (await ana.until(lambda f: f["type"] == "inbox_update"
                                   and f["conversation"]["unread"] == 0))[-1]
            assert row["conversation"]["mine"] is True
