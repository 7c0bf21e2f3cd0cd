"""Crash safety: ``kill -9`` the real server during 16 streaming replies, restart it, resume.

Every acknowledged shopper message must be in the database, every reply that was
streaming must be closed as interrupted (with a ``done`` a resuming client receives),
the conversations must go on, and the database must be intact (SQLite WAL
``PRAGMA integrity_check``; on both engines, each conversation's event seqs are exactly
1..last_seq). The server runs as a subprocess with the test-only slow echo answerer
(``CHATBOT_FAKE_ANSWERER``), so the replies stream for seconds without the model.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatbot.conversations.models import ChatMessage, Conversation, ConversationEvent
from chatbot.storage.db import Database
from knowledge_base.stores import get_or_create_store
from tests.integration.reliability_support import ServerProcess

pytestmark = pytest.mark.slow

CLIENTS = 16
# 60 echo tokens 30 ms apart: ~1.8 s per reply, so all 16 are mid-stream at the kill.
SLOW_ANSWERER = "60:0.03"


@dataclass
class Shopper:
    index: int
    conversation_id: str = ""
    resume_token: str | None = None
    acked: dict[str, str] = field(default_factory=dict)  # message id -> text
    tokens: dict[str, list[str]] = field(default_factory=dict)  # reply id -> texts seen
    last_seq: int = 0


async def _stream_until_killed(url: str, shopper: Shopper, streaming: asyncio.Event) -> None:
    """Open a conversation, ask twice (the second waits in the queue), read until the kill."""
    async with connect(url) as ws:
        await ws.send(json.dumps({"v": 1, "type": "hello", "store": "demo"}))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        shopper.conversation_id = welcome["conversation_id"]
        shopper.resume_token = welcome["resume_token"]
        sent = {
            f"m{shopper.index}_a": f"where is my order number {shopper.index}",
            f"m{shopper.index}_b": f"and can I return item {shopper.index}",
        }
        for msg_id, text in sent.items():
            await ws.send(json.dumps({"v": 1, "type": "message", "id": msg_id, "text": text}))
        try:
            while True:
                frame = json.loads(await ws.recv())
                shopper.last_seq = max(shopper.last_seq, frame.get("seq", 0))
                if frame["type"] == "ack":
                    shopper.acked[frame["id"]] = sent[frame["id"]]
                elif frame["type"] == "token":
                    shopper.tokens.setdefault(frame["reply_id"], []).append(frame["text"])
                    if len(shopper.tokens[frame["reply_id"]]) >= 3 and len(shopper.acked) == 2:
                        streaming.set()
                elif frame["type"] in ("done", "error"):
                    raise AssertionError(f"unexpected before the kill: {frame}")
        except ConnectionClosed:
            return


async def _resume_and_continue(url: str, shopper: Shopper) -> None:
    async with connect(url) as ws:
        await ws.send(
            json.dumps(
                {
                    "v": 1,
                    "type": "hello",
                    "store": "demo",
                    "conversation_id": shopper.conversation_id,
                    "resume_token": shopper.resume_token,
                    "last_seq": shopper.last_seq,
                }
            )
        )
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert welcome["type"] == "welcome" and welcome["resumed"] is True, welcome
        assert welcome["conversation_id"] == shopper.conversation_id
        dones = [e for e in welcome["events"] if e["type"] == "done"]
        assert [d["reply_id"] for d in dones] == list(shopper.tokens), welcome["events"]
        for done in dones:
            assert done["interrupted"] is True
            # The marker carries everything stored, which covers all the shopper saw.
            assert done["text"].startswith("".join(shopper.tokens[done["reply_id"]]))
        assert all(e["seq"] > shopper.last_seq for e in welcome["events"])
        msg_id = f"m{shopper.index}_after"
        await ws.send(json.dumps({"v": 1, "type": "message", "id": msg_id, "text": "still there?"}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert frame["type"] != "error", frame
            if frame["type"] == "done" and frame["in_reply_to"] == msg_id:
                assert frame["interrupted"] is False and frame["text"].startswith("still#0")
                return


def _check_database(db: Database, shoppers: list[Shopper]) -> None:
    with db.session() as session:
        for shopper in shoppers:
            conv = session.scalars(
                select(Conversation).where(Conversation.public_id == shopper.conversation_id)
            ).one()
            stored = {
                m.public_id: m.text
                for m in session.scalars(
                    select(ChatMessage).where(
                        ChatMessage.conversation_id == conv.id, ChatMessage.role == "shopper"
                    )
                )
            }
            for msg_id, text in shopper.acked.items():
                assert stored.get(msg_id) == text, (shopper.index, msg_id)
            seqs = session.scalars(
                select(ConversationEvent.seq)
                .where(ConversationEvent.conversation_id == conv.id)
                .order_by(ConversationEvent.seq)
            ).all()
            assert list(seqs) == list(range(1, conv.last_seq + 1)), "seq gap or duplicate"
            bots = session.scalars(
                select(ChatMessage).where(
                    ChatMessage.conversation_id == conv.id, ChatMessage.role == "bot"
                )
            ).all()
            assert bots and all(b.status == "interrupted" for b in bots[:1])
            for bot in bots:
                assert bot.status in ("interrupted", "complete")
                if bot.public_id in shopper.tokens:
                    assert bot.status == "interrupted" and bot.reason == "server_restart"
                    assert bot.text.startswith("".join(shopper.tokens[bot.public_id]))
        left = session.scalar(
            select(func.count()).select_from(ChatMessage).where(ChatMessage.status == "streaming")
        )
        assert left == 0


async def _crash_and_recover(tmp_path: Path, database_url: str) -> Database:
    db = Database(database_url)
    with db.transaction() as session:
        get_or_create_store(session, "demo")
    server = ServerProcess(tmp_path, database_url, {"CHATBOT_FAKE_ANSWERER": SLOW_ANSWERER})
    server.start()
    shoppers = [Shopper(i) for i in range(CLIENTS)]
    flags = [asyncio.Event() for _ in shoppers]
    try:
        tasks = [
            asyncio.create_task(_stream_until_killed(server.url, s, f))
            for s, f in zip(shoppers, flags, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), 30)
        server.kill()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
        assert all(len(s.acked) == 2 and len(s.tokens) == 1 for s in shoppers)

        server.start()  # same database, same port: recovery runs before listening
        _check_database(db, shoppers)
        await asyncio.wait_for(
            asyncio.gather(*(_resume_and_continue(server.url, s) for s in shoppers)), 60
        )
    finally:
        server.stop()
    return db


async def test_kill_9_during_16_replies_on_sqlite_wal(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    db = await _crash_and_recover(tmp_path, f"sqlite:///{path}")
    db.dispose()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []


@pytest.mark.postgres
async def test_kill_9_during_16_replies_on_postgres(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    db = await _crash_and_recover(tmp_path, pg_url)
    with db.session() as session:
        # No orphans: every event and message belongs to an existing conversation.
        orphans = session.scalar(
            select(func.count())
            .select_from(ConversationEvent)
            .where(~ConversationEvent.conversation_id.in_(select(Conversation.id)))
        )
        assert orphans == 0
    db.dispose()


def test_orphan_sweep_respects_live_replies_with_several_processes(tmp_path: Path) -> None:
    """With --poll-events another process may be streaming: only stale replies are closed."""
    from datetime import timedelta

    from chatbot.conversations.recovery import interrupt_orphaned_replies

    db = Database(f"sqlite:///{tmp_path / 'chat.db'}")
    with db.transaction() as session:
        store = get_or_create_store(session, "demo")
        conv = Conversation(store_id=store.id, public_id="c_" + "x" * 16)
        session.add(conv)
        session.flush()
        session.add(
            ChatMessage(conversation_id=conv.id, public_id="r_1", role="bot", status="streaming")
        )
    assert interrupt_orphaned_replies(db, stale_after=timedelta(minutes=5)) == 0
    assert interrupt_orphaned_replies(db) == 1
    assert interrupt_orphaned_replies(db) == 0  # idempotent
    with db.session() as session:
        row = session.scalars(select(ChatMessage)).one()
        assert row.status == "interrupted" and row.seq == 1
        done = session.scalars(select(ConversationEvent)).one()
        assert done.kind == "done" and done.payload["interrupted"] is True
    db.dispose()


