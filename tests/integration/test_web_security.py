"""Web security of the real server: headers, Origin checks, console auth, floods.

- Every served page and script carries the CSP and the hardening headers.
- Both sockets check the Origin: ``/ws/chat`` against the store's allowed origins,
  ``/ws/agent`` against the server's own origin (cross-site WebSocket hijacking).
- Console endpoints and the console socket refuse anyone without a session.
- Floods: 500 messages in about 2 s from one connection, and from ten connections of
  one IP, end in ``rate_limited``/``queue_full`` errors, store only what was acked, and
  another client (another IP: 127.0.0.2) is answered promptly meanwhile.

XSS (model, agent and shopper text never becoming HTML) is checked in headless Chromium
in tests/browser/test_xss_payloads.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatbot.conversations.models import ChatMessage
from chatbot.settings import Limits
from tests.fakes import FakeAnswerer
from tests.integration.agent_support import add_agent, agent_client, token_for
from tests.integration.server_support import ALLOWED_ORIGIN, ChatClient, Running, running_server

PAGES = ["/", "/demo", "/console", "/widget.js", "/static/console.js", "/static/console.css"]


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as res:
            return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


async def test_served_pages_carry_csp_and_hardening_headers(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        for path in PAGES:
            status, headers, body = await asyncio.to_thread(_get, srv.port, path)
            assert status == 200, path
            csp = headers["content-security-policy"]
            directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
            # No inline or foreign script: injected markup could not run even if it landed.
            assert directives["script-src"] == "'self'", path
            assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
            assert directives["frame-ancestors"] == "'none'", path
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"
            if path.endswith((".html", "/", "/demo", "/console")):
                assert headers["content-type"].startswith("text/html")
                assert b"<script>" not in body.replace(b" ", b""), "no inline scripts in pages"


async def _chat_origin(srv: Running, store: str, origin: str | None) -> tuple[str, int | None]:
    headers = {"Origin": origin} if origin else None
    async with connect(srv.url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"v": 1, "type": "hello", "store": store}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        kind = first["type"] if first["type"] != "error" else first["code"]
        code = None
        if kind != "welcome":
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            code = ws.close_code
        return kind, code


async def test_origin_checks_on_both_sockets(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        # Shopper socket: a store with allowed origins refuses other pages (and none).
        assert await _chat_origin(srv, "locked", ALLOWED_ORIGIN) == ("welcome", None)
        for origin in ("https://evil.example", "https://shop.example.evil.example", None):
            assert await _chat_origin(srv, "locked", origin) == ("origin_not_allowed", 1008)
        # Agent socket: a valid session cookie is useless from another site.
        add_agent(srv.db, "ana@shop.example", ["demo"])
        token = token_for(srv.db, "ana@shop.example")
        same = f"http://127.0.0.1:{srv.port}"
        async with agent_client(srv, cookie=token, origin=same, ready=False) as client:
            assert (await client.until("ready"))[-1]["agent"]["email"] == "ana@shop.example"
        for origin in ("https://evil.example", f"http://127.0.0.1:{srv.port}.evil.example"):
            async with agent_client(srv, cookie=token, origin=origin, ready=False) as client:
                assert (await client.error())["code"] == "forbidden"
                assert await client.closed_code() == 1008


async def test_console_refuses_unauthenticated_access(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        status, _, _ = await asyncio.to_thread(_get, srv.port, "/console/session")
        assert status == 401
        # No login without credentials, and a GET cannot log in (no CSRF by link).
        status, headers, _ = await asyncio.to_thread(_get, srv.port, "/console/login")
        assert status in (400, 401, 405) and "set-cookie" not in headers
        for first in (
            {"type": "subscribe_inbox", "store": "demo"},
            {"type": "open", "conversation_id": "c_aaaaaaaaaaaaaaaa"},
            {"type": "list_agents"},
            {"type": "auth", "token": "forged"},
        ):
            async with agent_client(srv, ready=False) as client:
                await client.send(**first)
                assert (await client.error())["code"] == "unauthorized", first
                assert await client.closed_code() == 1008


async def _flood(client: ChatClient, prefix: str, count: int, seconds: float) -> None:
    for i in range(count):
        await client.send(type="message", id=f"{prefix}_{i}", text=f"flood {i}")
        await asyncio.sleep(seconds / count)


async def _answers(client: ChatClient, count: int) -> tuple[set[str], list[dict[str, Any]]]:
    """Read until ``count`` message frames were answered: (acked ids, errors)."""
    acked: set[str] = set()
    errors: list[dict[str, Any]] = []
    while len(acked) + len(errors) < count:
        frame = await client.recv(10)
        if frame["type"] == "ack":
            acked.add(frame["id"])
        elif frame["type"] == "error":
            errors.append(frame)
    return acked, errors


async def _prompt_answer(srv: Running) -> float:
    """Seconds for a client on another IP to get a full reply."""
    async with connect(srv.url, local_addr=("127.0.0.2", 0)) as ws:
        other = ChatClient(ws)
        await other.hello()
        start = time.monotonic()
        await other.ask("is anyone there?")
        return time.monotonic() - start


def _stored(srv: Running) -> int:
    with srv.db.session() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(ChatMessage).where(ChatMessage.role == "shopper")
            )
            or 0
        )


@pytest.mark.slow
async def test_flood_from_one_connection_is_rate_limited_and_others_are_served(
    tmp_path: Path,
) -> None:
    fake = FakeAnswerer(delay_s=0.01)
    async with running_server(tmp_path, fake=fake) as srv, srv.client() as c:
        await c.hello()
        flood = asyncio.create_task(_flood(c, "f", 500, 2.0))
        await asyncio.sleep(0.5)
        other_s = await _prompt_answer(srv)
        await flood
        acked, errors = await _answers(c, 500)
        codes = {e["code"] for e in errors}
        assert codes <= {"rate_limited", "queue_full"} and "rate_limited" in codes
        assert len(acked) <= Limits().messages_per_minute_per_connection
        assert len(acked) + len(errors) == 500
        assert other_s < 5.0, f"another client waited {other_s:.1f} s during the flood"
        assert _stored(srv) == len(acked) + 1  # the other client's question


@pytest.mark.slow
async def test_flood_from_many_connections_of_one_ip_is_rate_limited(tmp_path: Path) -> None:
    fake = FakeAnswerer(delay_s=0.01)
    async with running_server(tmp_path, fake=fake) as srv:
        clients = [srv.client() for _ in range(10)]
        opened = [await cm.__aenter__() for cm in clients]
        try:
            for c in opened:
                await c.hello()
            flood = asyncio.gather(*(_flood(c, f"c{i}", 50, 2.0) for i, c in enumerate(opened)))
            await asyncio.sleep(0.5)
            other_s = await _prompt_answer(srv)
            await flood
            results = await asyncio.gather(*(_answers(c, 50) for c in opened))
        finally:
            for cm in clients:
                await cm.__aexit__(None, None, None)
        acked = set().union(*(a for a, _ in results))
        errors = [e for _, errs in results for e in errs]
        assert len(acked) <= Limits().messages_per_minute_per_ip
        assert {e["code"] for e in errors} <= {"rate_limited", "queue_full"}
        assert len(acked) + len(errors) == 500
        assert other_s < 5.0, f"another client waited {other_s:.1f} s during the flood"
        assert _stored(srv) == len(acked) + 1
