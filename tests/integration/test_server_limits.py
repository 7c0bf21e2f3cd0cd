"""Malformed input, abuse limits, HTTP endpoints and graceful shutdown of the real server."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import struct
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from chatbot import identity
from chatbot.conversations.models import ChatMessage
from chatbot.settings import Limits
from tests.fakes import FakeAnswerer
from tests.integration.server_support import ALLOWED_ORIGIN, Running, running_server


@pytest.fixture
async def srv(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_server(tmp_path, limits=Limits(max_frame_bytes=64 * 1024)) as running:
        yield running


async def _expect_error(srv: Running, frame: str | bytes, code: str, hello: bool = True) -> None:
    async with srv.client() as c:
        if hello:
            await c.hello()
        await c.send_raw(frame)
        err = (await c.until("error"))[-1]
        assert err["code"] == code, (frame, err)
        assert isinstance(err["message"], str) and err["message"]
        # still usable afterwards
        if hello:
            await c.send(type="typing", active=False)
            await c.ask("still there?")


async def _close_code_after_huge_frame(port: int, size: int) -> int:
    """Upgrade by hand, announce a ``size``-byte text frame, send its first MiB, read the close.

    Done on a raw socket so the client library's own limits and buffering play no part.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    mask = os.urandom(4)
    writer.write(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", size) + mask)
    chunk = bytes(b ^ mask[i % 4] for i, b in enumerate(b"x" * 4096))
    try:
        for _ in range(256):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass  # the server may already have closed
    frame = await asyncio.wait_for(reader.read(2 + 125), 5)
    writer.close()
    assert frame[0] == 0x88, frame  # a close frame
    return int(struct.unpack("!H", frame[2:4])[0])


async def test_each_malformed_input_is_answered_while_another_stream_completes(
    srv: Running,
) -> None:
    srv.fake.queue([f"x{i} " for i in range(60)], delay_s=0.01)
    expired = identity.sign(srv.secrets["demo"], "cust_1", ttl_s=1, now=time.time() - 600)
    forged = identity.sign("wrong-secret", "cust_1")

    async with srv.client() as streamer:
        await streamer.hello()
        await streamer.send(type="message", id="m_long", text="tell me everything")
        await streamer.until("token")

        await _expect_error(srv, "this is not json", "bad_json")
        await _expect_error(srv, "[1, 2]", "bad_json")
        await _expect_error(srv, b"\x00\x01binary", "binary_frame")
        await _expect_error(srv, json.dumps({"v": 1, "type": "explode"}), "unknown_type")
        await _expect_error(
            srv, json.dumps({"v": 1, "type": "message", "id": 5, "text": "x"}), "bad_message"
        )
        await _expect_error(
            srv, json.dumps({"v": 1, "type": "message", "id": "m", "text": None}), "bad_message"
        )
        await _expect_error(srv, json.dumps({"v": 9, "type": "message"}), "unsupported_version")
        await _expect_error(srv, "[" * 30_000 + "]" * 30_000, "bad_json")  # too deep
        await _expect_error(
            srv,
            json.dumps({"type": "message", "id": "m", "text": "hi"}),
            "hello_required",
            hello=False,
        )

        # a 10 MB frame closes that connection with 1009
        assert await _close_code_after_huge_frame(srv.port, 10 * 1024 * 1024) == 1009

        # unknown store and bad Origin: error event, then close 1008
        async with srv.client() as c:
            await c.send(type="hello", store="no-such-store")
            assert (await c.until("error"))[-1]["code"] == "unknown_store"
            assert await c.closed_code() == 1008
        async with srv.client(origin="https://evil.example") as c:
            await c.send(type="hello", store="locked")
            assert (await c.until("error"))[-1]["code"] == "origin_not_allowed"
            assert await c.closed_code() == 1008
        async with srv.client() as c:  # no Origin at all (not a browser) is refused too
            await c.send(type="hello", store="locked")
            assert (await c.until("error"))[-1]["code"] == "origin_not_allowed"
        async with srv.client(origin=ALLOWED_ORIGIN) as c:
            assert (await c.hello(store="locked"))["type"] == "welcome"

        # forged and expired identity tokens: error, connection goes on as a guest
        for token in (forged, expired):
            async with srv.client() as c:
                await c.send(type="hello", store="demo", identity=token)
                frames = await c.until("welcome")
                assert frames[0]["code"] == "invalid_identity"
                assert frames[-1]["customer"]["verified"] is False

        frames = await streamer.until("done", timeout=20)
    done = frames[-1]
    assert done["interrupted"] is False
    assert done["text"] == "".join(f"x{i} " for i in range(60))


async def test_message_too_long_and_empty_are_refused_and_not_stored(tmp_path: Path) -> None:
    limits = Limits(max_message_chars=50)
    async with running_server(tmp_path, limits=limits) as srv, srv.client() as c:
        welcome = await c.hello()
        assert welcome["max_message_chars"] == 50
        await c.send(type="message", id="m_long", text="y" * 51)
        err = (await c.until("error"))[-1]
        assert (err["code"], err["ref"]) == ("message_too_long", "m_long")
        await c.send(type="message", id="m_empty", text="   ")
        assert (await c.until("error"))[-1]["code"] == "empty_message"
        await c.ask("y" * 50)
        with srv.db.session() as session:
            ids = session.scalars(
                select(ChatMessage.public_id).where(ChatMessage.role == "shopper")
            ).all()
        assert len(ids) == 1 and ids[0] not in ("m_long", "m_empty")


async def test_per_connection_and_per_ip_rate_limits(tmp_path: Path) -> None:
    limits = Limits(
        messages_per_minute_per_connection=3, messages_per_minute_per_ip=5, max_queued_messages=50
    )
    async with running_server(tmp_path, limits=limits) as srv:
        async with srv.client() as c:
            await c.hello()
            for i in range(3):
                await c.ask(f"q{i}")
            await c.send(type="message", id="m_4", text="one too many")
            err = (await c.until("error"))[-1]
            assert (err["code"], err["ref"]) == ("rate_limited", "m_4")
        async with srv.client() as c2:  # same IP, fresh connection bucket, IP bucket nearly spent
            await c2.hello()
            await c2.ask("q3")
            await c2.ask("q4")
            await c2.send(type="message", id="m_ip", text="over the IP budget")
            assert (await c2.until("error"))[-1]["code"] == "rate_limited"
        assert srv.fake.started == 5


async def test_queue_full_is_refused_while_a_reply_streams(tmp_path: Path) -> None:
    limits = Limits(max_queued_messages=1)
    fake = FakeAnswerer()
    async with running_server(tmp_path, limits=limits, fake=fake) as srv, srv.client() as c:
        await c.hello()
        fake.queue(["slow"], pause_at=0)
        await c.send(type="message", id="m_1", text="first")
        await fake.wait_paused()
        await c.send(type="message", id="m_2", text="queued")
        await c.until("ack")
        await c.send(type="message", id="m_3", text="refused")
        err = (await c.until("error"))[-1]
        assert (err["code"], err["ref"]) == ("queue_full", "m_3")
        fake.release()
        await c.until(lambda f: f["type"] == "done" and f["in_reply_to"] == "m_2")


async def test_connection_caps_refuse_the_upgrade(tmp_path: Path) -> None:
    limits = Limits(max_connections=10, max_connections_per_ip=2)
    async with running_server(tmp_path, limits=limits) as srv:
        async with srv.client() as a, srv.client() as b:
            await a.hello()
            await b.hello()
            with pytest.raises(InvalidStatus) as info:
                async with connect(srv.url):
                    pass
            assert info.value.response.status_code == 429
            await a.ask("the open ones still work")
        async with srv.client() as c:  # released on close
            await c.hello()


async def test_idle_connections_are_closed(tmp_path: Path) -> None:
    limits = Limits(idle_timeout_s=0.3)
    async with running_server(tmp_path, limits=limits) as srv, srv.client() as c:
        await c.hello()
        err = (await c.until("error"))[-1]
        assert err["code"] == "idle_timeout"
        assert await c.closed_code() == 1001


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


async def test_http_endpoints_headers_and_static_files(tmp_path: Path) -> None:
    static = tmp_path / "web"
    static.mkdir()
    (static / "widget.js").write_text("console.log('widget');\n")
    (static / "demo.html").write_text("<!doctype html><title>demo</title>\n")
    (static / "console.html").write_text("<!doctype html><title>console</title>\n")
    (tmp_path / "secret.txt").write_text("do not serve")
    async with running_server(tmp_path, static_dir=static) as srv:
        async with srv.client() as c:
            await c.hello()
            await c.ask("count me")
            await c.send_raw("not json")
            await c.until("error")
        get = lambda path: asyncio.to_thread(_get, srv.port, path)  # noqa: E731
        assert (await get("/healthz"))[0] == 200
        assert (await get("/readyz"))[0] == 200
        status, headers, body = await get("/metrics")
        text = body.decode()
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'chatbot_errors_total{code="bad_json"} 1' in text
        assert 'chatbot_replies_total{outcome="complete"} 1' in text
        assert "chatbot_time_to_first_token_seconds_count 1" in text
        assert "chatbot_messages_total 1" in text
        assert 'chatbot_connections{socket="chat"}' in text
        status, headers, body = await get("/widget.js")
        assert status == 200 and b"widget" in body
        assert headers["content-type"].startswith("text/javascript")
        assert headers["cross-origin-resource-policy"] == "cross-origin"
        for page, marker in (("/", b"demo"), ("/demo", b"demo"), ("/console", b"console")):
            status, headers, body = await get(page)
            assert status == 200 and marker in body
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "script-src 'self'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
        for bad in (
            "/static/../secret.txt",
            "/static/%2e%2e/secret.txt",
            "/static/.hidden.js",
            "/nope",
            "/static/missing.js",
            "/static/sub/widget.js",
        ):
            assert (await get(bad))[0] == 404, bad
        # a plain GET on the socket path is not an upgrade
        assert (await get("/ws/chat"))[0] in (400, 426)


async def test_readyz_is_503_until_an_answerer_is_ready(tmp_path: Path) -> None:
    async with running_server(tmp_path, ready=False) as srv:
        assert (await asyncio.to_thread(_get, srv.port, "/readyz"))[0] == 503
        async with srv.client() as c:
            await c.hello()
            await c.send(type="message", id="m_1", text="anyone?")
            frames = await c.until("error")
            assert frames[0]["type"] == "ack"  # stored for an agent even though the bot waits
            assert frames[-1]["code"] == "not_ready"
        srv.app.set_answerer(srv.fake)
        assert (await asyncio.to_thread(_get, srv.port, "/readyz"))[0] == 200


async def test_graceful_shutdown_checkpoints_replies_and_closes_1001(tmp_path: Path) -> None:
    fake = FakeAnswerer()
    async with running_server(tmp_path, fake=fake) as srv, srv.client() as c:
        await c.hello()
        fake.queue(["half ", "a ", "reply"], pause_at=2)
        await c.send(type="message", id="m_1", text="go")
        await fake.wait_paused()
        await c.until(lambda f: f["type"] == "token" and f["text"] == "a ")
        stopping = asyncio.create_task(srv.app.stop(drain_s=0.2))
        frames = await c.until("error")
        done = next(f for f in frames if f["type"] == "done")
        assert done["interrupted"] is True and done["text"] == "half a "
        assert frames[-1]["code"] == "shutting_down"
        assert await c.closed_code() == 1001
        await stopping
        with srv.db.session() as session:
            reply = session.scalars(select(ChatMessage).where(ChatMessage.role == "bot")).one()
        assert (reply.status, reply.text) == ("interrupted", "half a ")
        fake.release()


async def test_abandoned_reply_is_stopped_after_the_grace_period(tmp_path: Path) -> None:
    fake = FakeAnswerer()
    async with running_server(tmp_path, fake=fake, grace_s=0.2) as srv:
        async with srv.client() as c:
            await c.hello()
            fake.queue(["left ", "alone"], pause_at=1)
            await c.send(type="message", id="m_1", text="go")
            await fake.wait_paused()
            await c.until("token")
        for _ in range(50):
            await asyncio.sleep(0.05)
            with srv.db.session() as session:
                reply = session.scalars(select(ChatMessage).where(ChatMessage.role == "bot")).one()
            if reply.status != "streaming":
                break
        assert (reply.status, reply.text) == ("interrupted", "left ")
        fake.release()


async def test_a_connection_without_hello_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatbot.server import chat_socket

    monkeypatch.setattr(chat_socket, "HELLO_TIMEOUT_S", 0.3)
    async with running_server(tmp_path) as srv, srv.client() as c:
        await c.send(type="typing")
        assert (await c.until("error"))[-1]["code"] == "hello_required"
        err = (await c.until("error"))[-1]
        assert err["code"] == "hello_required" and "in time" in err["message"]
        assert await c.closed_code() == 1008
