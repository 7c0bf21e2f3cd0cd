"""One replay run: pick the target (a running server or an in-process one), replay, collect.

``chatbot replay`` and the pytest plugin both go through :func:`replay`; the plugin keeps
one :class:`ReplaySession` (one in-process server) for the whole pytest session.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chatbot.errors import AuthError, ConfigError
from chatbot.replay.checks import DatabaseEvidence
from chatbot.replay.environment import InProcessServer, Target
from chatbot.replay.format import Transcript
from chatbot.replay.runner import Replayer, TranscriptResult
from chatbot.settings import Settings
from chatbot.types import Answerer

log = logging.getLogger(__name__)


def agent_login(server_url: str, email: str, password: str) -> str:
    """Log in to a running server's console (``POST /console/login``); the session token."""
    parts = urlsplit(server_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    raw = base64.b64encode(f"{email}:{password}".encode()).decode()
    request = urllib.request.Request(
        f"{scheme}://{parts.netloc}/console/login",
        method="POST",
        data=b"",
        headers={"Authorization": f"Basic {raw}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as res:
            cookie_header = res.headers.get("Set-Cookie", "")
    except urllib.error.HTTPError as err:
        raise AuthError(f"console login as {email} failed: HTTP {err.code}") from err
    except urllib.error.URLError as err:
        raise ConfigError(f"cannot reach {scheme}://{parts.netloc}: {err.reason}") from err
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(cookie_header)
    morsel = cookie.get("chatbot_console")
    if morsel is None or not morsel.value:
        raise AuthError("the console login answered without a session cookie")
    return morsel.value


def remote_target(
    server_url: str,
    settings: Settings,
    *,
    identity_secret: str | None = None,
    agent_email: str | None = None,
    agent_password: str | None = None,
) -> Target:
    """A target for a running server; its database (``settings``) is read if reachable."""
    if urlsplit(server_url).scheme not in ("ws", "wss"):
        raise ConfigError(f"--server must be a ws:// or wss:// URL, not {server_url!r}")
    db: Any = None
    try:
        from chatbot.storage.db import Database

        db = Database(settings.database_url, run_migrations=False)
    except Exception as exc:  # noqa: BLE001 - optional: only some checks need it
        log.info("no database for identity secrets and evidence: %s", exc)
    token = None
    if agent_email:
        if not agent_password:
            raise ConfigError("--agent-email needs --agent-password-file")
        token = agent_login(server_url, agent_email, agent_password)
    return Target(server_url, db=db, agent_token=token, identity_secret=identity_secret)


class ReplaySession:
    """A target kept open across many replays (an in-process server, or a remote one)."""

    def __init__(
        self,
        settings: Settings,
        transcripts: Sequence[Transcript],
        *,
        server_url: str | None = None,
        answerer: Answerer | None = None,
        index_cache: Path | None = None,
        identity_secret: str | None = None,
        agent_email: str | None = None,
        agent_password: str | None = None,
        reply_timeout_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.server_url = server_url
        self.identity_secret = identity_secret
        self.agent_email = agent_email
        self.agent_password = agent_password
        self.reply_timeout_s = reply_timeout_s
        self.server: InProcessServer | None = None
        if server_url is None:
            self.server = InProcessServer(
                settings, [t.store for t in transcripts], answerer=answerer,
                index_cache=index_cache,
            )
        self.replayer: Replayer | None = None

    async def start(self) -> Replayer:
        if self.replayer is not None:
            return self.replayer
        if self.server is not None:
            target = await self.server.start()
        else:
            assert self.server_url is not None
            target = await asyncio.to_thread(
                remote_target, self.server_url, self.settings,
                identity_secret=self.identity_secret, agent_email=self.agent_email,
                agent_password=self.agent_password,
            )
        evidence = DatabaseEvidence(target.db) if target.db is not None else None
        options: dict[str, Any] = {}
        if self.reply_timeout_s is not None:
            options["reply_timeout_s"] = self.reply_timeout_s
        self.replayer = Replayer(target, evidence=evidence, **options)
        return self.replayer

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        elif self.replayer is not None and self.replayer.target.db is not None:
            self.replayer.target.db.dispose()
        self.replayer = None

    async def run(
        self,
        transcripts: Sequence[Transcript],
        *,
        concurrency: int = 1,
        on_result: Callable[[TranscriptResult], None] | None = None,
    ) -> list[TranscriptResult]:
        replayer = await self.start()
        return await replayer.run_all(transcripts, concurrency=concurrency, on_result=on_result)


async def replay(
    transcripts: Sequence[Transcript],
    settings: Settings,
    *,
    concurrency: int = 1,
    on_result: Callable[[TranscriptResult], None] | None = None,
    **options: Any,
) -> list[TranscriptResult]:
    """Replay ``transcripts`` once: start the target, run them all, stop it."""
    session = ReplaySession(settings, transcripts, **options)
    try:
        return await session.run(transcripts, concurrency=concurrency, on_result=on_result)
    finally:
        await session.stop()
