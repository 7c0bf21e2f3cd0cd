"""Helpers for the reliability tests: a real ``chatbot serve`` subprocess, throwaway PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m chatbot serve`` on a free port, with its log in a file."""

    def __init__(self, home: Path, database_url: str, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.home = home
        self.database_url = database_url
        self.extra_env = env or {}
        self.args = args  # more ``chatbot serve`` options, e.g. ("--poll-events", "0.1")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / "serve.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat"

    def start(self, timeout: float = 60.0) -> None:
        env = {
            **os.environ,
            "CHATBOT_HOME": str(self.home),
            "CHATBOT_DATABASE_URL": self.database_url,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatbot", "serve", "--port", str(self.port),
                 *self.args],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"chatbot serve exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.http + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"chatbot serve not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no drain, no checkpoint, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
