"""``chatbot serve`` wiring: URLs in the log, readiness after loading, SIGTERM drains."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatbot.commands import serve as serve_cmd
from chatbot.settings import Settings
from chatbot.storage.db import Database
from knowledge_base.stores import get_or_create_store
from tests.fakes import FakeAnswerer
from tests.integration.server_support import chat_client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_logs_urls_and_stops_gracefully_on_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = _free_port()
    settings = Settings.from_env({"CHATBOT_HOME": str(tmp_path)}).replace(port=port)
    db = Database(settings.database_url)
    with db.transaction() as session:
        get_or_create_store(session, "demo")
    db.dispose()
    fake = FakeAnswerer()
    loaded = asyncio.Event()

    async def fake_loader(*args: object) -> FakeAnswerer:
        await loaded.wait()  # /readyz is 503 until the "model" is loaded
        return fake

    monkeypatch.setattr(serve_cmd, "_load_answerer", fake_loader)
    server = asyncio.create_task(serve_cmd.run_server(settings, demo=False, drain_s=0.1))
    for _ in range(100):
        if any("agent console" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert f"http://127.0.0.1:{port}/demo" in messages
    assert f"http://127.0.0.1:{port}/console" in messages
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 503")
    writer.close()
    loaded.set()
    await asyncio.sleep(0.1)

    fake.queue(["never ", "finished"], pause_at=1)
    async with chat_client(f"ws://127.0.0.1:{port}/ws/chat") as c:
        await c.hello()
        await c.send(type="message", id="m_1", text="hi")
        await fake.wait_paused()
        await c.until("token")
        os.kill(os.getpid(), signal.SIGTERM)
        frames = await c.until("error", timeout=10)
        done = next(f for f in frames if f["type"] == "done")
        assert done["interrupted"] is True and done["text"] == "never "
        assert frames[-1]["code"] == "shutting_down"
        assert await c.closed_code() == 1001
    await asyncio.wait_for(server, 10)
    fake.release()


def test_serve_help_documents_its_options() -> None:
    from chatbot.cli import cli

    out = CliRunner().invoke(cli, ["serve", "--help"])
    assert out.exit_code == 0
    for option in ("--host", "--port", "--demo", "--drain", "--poll-events"):
        assert option in out.output
    assert "chatbot serve --demo" in out.output
