"""The server's persistence on PostgreSQL: resume, seq allocation and one-winner takeovers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatbot.conversations.ownership import Action
from chatbot.errors import ConflictError
from tests.integration.server_support import conversation_ref, running_server, stored_seqs

pytestmark = pytest.mark.postgres


async def test_stream_drop_and_resume_on_postgres(tmp_path: Path, pg_url: str) -> None:
    async with running_server(tmp_path, database_url=pg_url) as srv:
        srv.fake.queue([f"p{i} " for i in range(20)], delay_s=0.005, pause_at=6)
        async with srv.client() as c:
            welcome = await c.hello()
            await c.send(type="message", id="m_1", text="hello postgres")
            await srv.fake.wait_paused()
            seen = await c.until(lambda f: f["type"] == "token" and f["text"] == "p5 ")
        srv.fake.release()
        async with srv.client() as c2:
            w2 = await c2.hello(
                conversation_id=welcome["conversation_id"],
                last_seq=seen[-1]["seq"],
                resume_token=welcome["resume_token"],
            )
            rest = list(w2["events"])
            if not any(e["type"] == "done" for e in rest):
                rest += await c2.until("done")
        done = next(e for e in rest if e["type"] == "done")
        assert done["text"] == "".join(f"p{i} " for i in range(20))
        got = [f["seq"] for f in seen + rest if f["type"] in ("ack", "token", "done")]
        assert got == sorted(set(got))
        stored = stored_seqs(srv.db, welcome["conversation_id"])
        assert [s[0] for s in stored] == list(range(1, len(stored) + 1))  # gap-free log


async def test_concurrent_takeovers_on_postgres_have_one_winner(
    tmp_path: Path, pg_url: str
) -> None:
    async with running_server(tmp_path, database_url=pg_url) as srv:
        async with srv.client() as c:
            welcome = await c.hello()
            await c.ask("hi")
        ref = conversation_ref(srv.app, srv.db, welcome["conversation_id"])
        results = await asyncio.gather(
            *(
                srv.app.conversations.transition(
                    ref, Action.TAKE_OVER, agent_id=i, agent_name=f"A{i}"
                )
                for i in range(6)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, Exception)]
        assert len(winners) == 1
        assert all(isinstance(r, ConflictError) for r in results if r not in winners)
        after = conversation_ref(srv.app, srv.db, welcome["conversation_id"])
        assert after.state == "agent" and after.agent_name == winners[0].agent_name
        kinds = [k for _, k, _ in stored_seqs(srv.db, welcome["conversation_id"])]
        assert kinds.count("status") == 1  # one agent_joined, not six


async def test_racing_processes_settle_takeover_in_the_database(
    tmp_path: Path, pg_url: str
) -> None:
    """Threads with their own sessions stand in for server processes: one winner."""
    import threading

    from chatbot.conversations.ownership import transition

    async with running_server(tmp_path, database_url=pg_url) as srv:
        async with srv.client() as c:
            welcome = await c.hello()
            await c.ask("hello")
        ref = conversation_ref(srv.app, srv.db, welcome["conversation_id"])
        barrier = threading.Barrier(6)
        outcomes: list[str] = []

        def take(agent: int) -> None:
            barrier.wait()
            try:
                with srv.db.transaction() as session:
                    transition(session, ref.id, Action.TAKE_OVER, agent_id=agent)
                outcomes.append("won")
            except ConflictError:
                outcomes.append("lost")

        threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["lost"] * 5 + ["won"]
        assert conversation_ref(srv.app, srv.db, welcome["conversation_id"]).version == 1
