"""Helpers for the console tests: agent accounts, HTTP login, and a /ws/agent JSON client."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from websockets.asyncio.client import connect

from chatbot.agents import accounts, sessions
from chatbot.storage.clock import utcnow
from chatbot.storage.db import Database
from tests.integration.server_support import ChatClient, Running

PASSWORD = "correct horse battery"


def add_agent(db: Database, email: str, stores: list[str], *, admin: bool = False,
              name: str = "") -> None:
    with db.transaction() as session:
        accounts.add_agent(session, email, PASSWORD, stores=stores, is_admin=admin, name=name)


def token_for(db: Database, email: str, *, expired: bool = False) -> str:
    """A session token for ``email`` (already expired when asked)."""
    now = utcnow() - timedelta(days=2) if expired else utcnow()
    with db.transaction() as session:
        return sessions.login(session, email, PASSWORD, now=now).token


def http(running: Running, method: str, path: str, headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One blocking HTTP request to the server: status, headers, JSON body."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{running.port}{path}", method=method, headers=headers or {},
        data=b"" if method == "POST" else None,
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, dict(res.headers), json.loads(res.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"{}")


def http_from(source_ip: str, running: Running, method: str, path: str,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Like :func:`http`, from another loopback address (e.g. ``127.0.0.2``)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10,
                                      source_address=(source_ip, 0))
    try:
        conn.request(method, path, body=b"" if method == "POST" else None,
                     headers=headers or {})
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), json.loads(res.read() or b"{}")
    finally:
        conn.close()


def basic(email: str, password: str = PASSWORD) -> dict[str, str]:
    raw = base64.b64encode(f"{email}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


class AgentClient(ChatClient):
    """A console client: JSON frames plus waits for console events."""

    async def act(self, kind: str, conversation_id: str, **fields: Any) -> None:
        await self.send(type=kind, conversation_id=conversation_id, **fields)

    async def open(self, conversation_id: str) -> dict[str, Any]:
        await self.act("open", conversation_id)
        return (await self.until(lambda f: f["type"] == "conversation"
                                 and f["conversation_id"] == conversation_id))[-1]

    async def event(self, pred: Callable[[dict[str, Any]], bool],
                    timeout: float = 5.0) -> dict[str, Any]:
        """The next live conversation event matching ``pred`` (its inner event)."""
        frames = await self.until(lambda f: f["type"] == "event" and pred(f["event"]), timeout)
        return frames[-1]["event"]

    async def error(self, timeout: float = 5.0) -> dict[str, Any]:
        return (await self.until("error", timeout))[-1]


@asynccontextmanager
async def agent_client(running: Running, token: str | None = None, *,
                       cookie: str | None = None, origin: str | None = None,
                       ready: bool = True) -> AsyncIterator[AgentClient]:
    """Connect to /ws/agent; authenticate with an ``auth`` frame (``token``) or a cookie."""
    headers: dict[str, str] = {}
    if cookie is not None:
        headers["Cookie"] = f"chatbot_console={cookie}"
    if origin is not None:
        headers["Origin"] = origin
    async with connect(f"ws://127.0.0.1:{running.port}/ws/agent",
                       additional_headers=headers or None) as ws:
        client = AgentClient(ws)
        if token is not None:
            await client.send(type="auth", token=token)
        if ready:
            await client.until("ready")
        yield client


async def quiet(client: ChatClient, seconds: float) -> list[dict[str, Any]]:
    """Every frame that arrives within ``seconds``."""
    got: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            got.append(await client.recv(left))
        except TimeoutError:
            break
    return got
