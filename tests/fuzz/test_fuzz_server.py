"""Property fuzz of the live server: mutated frames over a real ``/ws/chat`` socket.

A real ``ChatServer`` (port 0, SQLite, the scripted ``FakeAnswerer``) runs in a background
thread for the whole module; hypothesis drives a synchronous websockets client. Each
example opens a connection (usually saying ``hello`` first) and sends up to 90 hostile
frames from :mod:`tests.fuzz.frames`, each followed by a sentinel frame of an unknown
type, so everything the server answered to the fuzz frame arrives before the sentinel's
error. About 6,000 fuzz frames in all. Properties:

- a frame the decoder refuses is answered with exactly one ``error`` of the decoder's
  code; a valid frame before ``hello`` with ``hello_required``;
- nothing is ever answered with ``internal_error``, and the connection stays open
  (no crash, no 1011 close), every read completes within seconds (no hang);
- every accepted ``message`` is acknowledged or refused with an error naming its id;
- afterwards the same connection still answers, and a new connection gets a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from chatbot.errors import ProtocolError
from chatbot.protocol import chat
from chatbot.settings import Limits
from tests.fuzz.frames import hostile_frame
from tests.integration.server_support import running_server

READ_TIMEOUT_S = 10.0
FUZZ_EXAMPLES = 70
FRAMES_PER_EXAMPLE = 90  # with the sentinels, inside the per-connection frame burst (200)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live server in its own event loop thread, shared by every example."""
    tmp: Path = tmp_path_factory.mktemp("fuzz-server")
    ready = threading.Event()
    box: dict[str, Any] = {}
    # Messages are not rate limited here, so that valid fuzz messages reach the session
    # logic; the limits themselves are tested in test_web_security.py.
    limits = Limits(
        messages_per_minute_per_connection=100_000,
        messages_per_minute_per_ip=1_000_000,
        frames_per_minute_per_ip=1_000_000,  # ~12,700 frames, all from 127.0.0.1
        max_connections_per_ip=1000,
    )

    async def main() -> None:
        async with running_server(tmp, limits=limits) as srv:
            box.update(url=srv.url, stop=asyncio.Event(), loop=asyncio.get_running_loop())
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(30), "fuzz server did not start"
    try:
        yield box["url"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)


def _read(ws: ClientConnection) -> dict[str, Any]:
    frame = ws.recv(timeout=READ_TIMEOUT_S)  # TimeoutError here means the server hung
    return json.loads(frame)


def _sentinel_round(ws: ClientConnection, name: str, seen: list[dict[str, Any]]) -> list[dict]:
    """Send an unknown-type sentinel; the frames received before its error."""
    ws.send(json.dumps({"v": 1, "type": name}))
    got: list[dict[str, Any]] = []
    while True:
        frame = _read(ws)
        seen.append(frame)
        if frame["type"] == "error" and name in frame["message"]:
            return got
        got.append(frame)


def _expected(frame: str | bytes) -> chat.ClientMessage | str:
    try:
        return chat.decode(frame)
    except ProtocolError as exc:
        return exc.code


def _errors(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "error"]


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    frames=st.lists(hostile_frame(), min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE),
    say_hello=st.sampled_from([True, True, True, False]),
)
def test_live_server_answers_every_bad_frame_and_keeps_serving(
    server_url: str, frames: list[str | bytes], say_hello: bool
) -> None:
    seen: list[dict[str, Any]] = []  # everything received on this connection
    pending: set[str] = set()  # accepted message ids still waiting for their ack
    with connect(server_url, max_size=None, open_timeout=10) as ws:
        if say_hello:
            ws.send(json.dumps({"v": 1, "type": "hello", "store": "demo"}))
            assert _read(ws)["type"] == "welcome"
        for index, frame in enumerate(frames):
            expected = _expected(frame)
            if not say_hello and isinstance(expected, chat.Hello):
                continue  # a hello would start the session; this example stays before it
            ws.send(frame)
            got = _sentinel_round(ws, f"zz_sentinel_{index}", seen)
            errors = _errors(got)
            assert not [e for e in errors if e["code"] == "internal_error"], (frame, got)
            if isinstance(expected, str):
                assert [e["code"] for e in errors] == [expected], (frame, got)
            elif not say_hello:
                assert [e["code"] for e in errors] == ["hello_required"], (frame, got)
            elif isinstance(expected, chat.Hello):
                assert [e["code"] for e in errors] == ["already_started"], (frame, got)
            elif isinstance(expected, chat.Message):
                refused = [e for e in errors if e.get("ref") == expected.id]
                if not refused and not any(
                    f["type"] == "ack" and f["id"] == expected.id for f in seen
                ):
                    pending.add(expected.id)
            pending -= {f["id"] for f in seen if f["type"] == "ack"}
        # Still the same, open connection: it answers, and late acks all arrive.
        _sentinel_round(ws, "zz_sentinel_final", seen)
        with contextlib.suppress(TimeoutError):
            while pending - {f["id"] for f in seen if f["type"] == "ack"}:
                seen.append(_read(ws))
        assert not pending - {f["id"] for f in seen if f["type"] == "ack"}, pending
        assert not [f for f in seen if f["type"] == "error" and f["code"] == "internal_error"]
    # The server as a whole keeps serving valid traffic.
    with connect(server_url, open_timeout=10) as ws:
        ws.send(json.dumps({"v": 1, "type": "hello", "store": "demo"}))
        assert _read(ws)["type"] == "welcome"
        msg_id = f"m_{uuid.uuid4().hex[:8]}"
        ws.send(json.dumps({"v": 1, "type": "message", "id": msg_id, "text": "still there?"}))
        while (f := _read(ws))["type"] != "done":
            assert f["type"] != "error", f
        assert f["in_reply_to"] == msg_id and "still" in f["text"]
