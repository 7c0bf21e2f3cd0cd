"""Helpers for the server integration tests: a running ChatServer and a JSON chat client."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from chatbot.server.app import ChatServer
from chatbot.settings import Limits, Settings
from chatbot.storage.db import Database
from knowledge_base.models import Customer
from knowledge_base.stores import get_or_create_store
from tests.fakes import FakeAnswerer

ALLOWED_ORIGIN = "https://shop.example"


@dataclass
class Running:
    app: ChatServer
    port: int
    fake: FakeAnswerer
    db: Database
    secrets: dict[str, str]  # store name -> identity secret
    customers: dict[str, int]  # source id -> db id

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat"

    def client(self, origin: str | None = None, **kw: Any) -> Any:
        return chat_client(self.url, origin=origin, **kw)


def seed(db: Database) -> tuple[dict[str, str], dict[str, int]]:
    """Stores ``demo`` (any origin) and ``locked`` (one origin), two customers of demo."""
    with db.transaction() as session:
        demo = get_or_create_store(session, "demo")
        locked = get_or_create_store(session, "locked")
        locked.allowed_origins = [ALLOWED_ORIGIN]
        customers = {}
        for source in ("cust_1", "cust_2"):
            c = Customer(
                store_id=demo.id,
                source_id=source,
                email=f"{source}@example.com",
                first_name=source.title(),
                address={},
                payment_methods=[],
            )
            session.add(c)
            session.flush()
            customers[source] = c.id
        return {"demo": demo.identity_secret, "locked": locked.identity_secret}, customers


@asynccontextmanager
async def running_server(
    tmp_path: Path,
    *,
    database_url: str | None = None,
    limits: Limits | None = None,
    fake: FakeAnswerer | None = None,
    static_dir: Path | None = None,
    grace_s: float = 0.5,
    ready: bool = True,
) -> AsyncIterator[Running]:
    settings = Settings.from_env(
        {"CHATBOT_HOME": str(tmp_path)},
        database_url=database_url or f"sqlite:///{tmp_path / 'chat.db'}",
    )
    if limits is not None:
        settings = settings.replace(limits=limits)
    db = Database(settings.database_url)
    secrets, customers = seed(db)
    fake = fake or FakeAnswerer()
    app = ChatServer(
        settings,
        db,
        fake if ready else None,
        static_dir=static_dir,
        flush_interval_s=0.005,
        reply_grace_s=grace_s,
    )
    port = await app.start(host="127.0.0.1", port=0)
    try:
        yield Running(app, port, fake, db, secrets, customers)
    finally:
        await app.stop(drain_s=0)
        db.dispose()


class ChatClient:
    """A websockets client speaking JSON frames, with waits that fail loudly."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def send(self, **fields: Any) -> None:
        await self.ws.send(json.dumps({"v": 1, **fields}))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def until(
        self, match: str | Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Frames received up to and including the first that matches."""
        pred = (lambda f: f["type"] == match) if isinstance(match, str) else match
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout}s; got {got}")
            frame = await self.recv(left)
            got.append(frame)
            if pred(frame):
                return got

    async def hello(self, store: str = "demo", **fields: Any) -> dict[str, Any]:
        await self.send(type="hello", store=store, **fields)
        return (await self.until("welcome"))[-1]

    async def ask(self, text: str, msg_id: str | None = None) -> list[dict[str, Any]]:
        """Send a message and return every frame through its reply's ``done``."""
        msg_id = msg_id or f"m_{uuid.uuid4().hex[:8]}"
        await self.send(type="message", id=msg_id, text=text)
        return await self.until(lambda f: f["type"] == "done" and f["in_reply_to"] == msg_id)

    async def closed_code(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close; the close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except Exception:
            pass
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code


@asynccontextmanager
async def chat_client(url: str, origin: str | None = None, **kw: Any) -> AsyncIterator[ChatClient]:
    headers = {"Origin": origin} if origin else None
    async with connect(url, additional_headers=headers, **kw) as ws:
        yield ChatClient(ws)


def stored_seqs(db: Database, public_id: str) -> list[tuple[int, str, str | None]]:
    """(seq, kind, reply_id) of a conversation's non-internal events, in order."""
    from sqlalchemy import select

    from chatbot.conversations.models import Conversation, ConversationEvent

    with db.session() as session:
        conv = session.scalars(
            select(Conversation).where(Conversation.public_id == public_id)
        ).one()
        rows = session.execute(
            select(ConversationEvent.seq, ConversationEvent.kind, ConversationEvent.reply_id)
            .where(ConversationEvent.conversation_id == conv.id)
            .where(ConversationEvent.internal.is_(False))
            .order_by(ConversationEvent.seq)
        ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]


def conversation_ref(app: ChatServer, db: Database, public_id: str) -> Any:
    from sqlalchemy import select

    from chatbot.conversations.log import to_ref
    from chatbot.conversations.models import Conversation

    with db.session() as session:
        conv = session.scalars(
            select(Conversation).where(Conversation.public_id == public_id)
        ).one()
        return to_ref(conv)
