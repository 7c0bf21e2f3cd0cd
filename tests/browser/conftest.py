"""Browser test fixtures: the real ChatServer on a free port, a FakeAnswerer, headless Chromium.

The server runs in the test's event loop, so a test can script replies
(``live.fake.queue(...)``), pause them, and drop sockets while Playwright (async API)
drives Debian's ``chromium``. Tests skip cleanly when Chromium or Playwright is missing.
Screenshots go to ``tests/browser/artifacts/`` (git-ignored) for review.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from widget_support import CHROMIUM_ARGS, LiveServer, chromium_executable, new_page, seed_demo_store

from chatbot.settings import Settings
from chatbot.storage.db import Database
from tests.fakes import FakeAnswerer


@pytest.fixture
def chromium_path() -> str:
    path = chromium_executable()
    if path is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.async_api")
    return path


@pytest.fixture
async def live(
    request: pytest.FixtureRequest, tmp_path: Path, chromium_path: str
) -> AsyncIterator[LiveServer]:
    """The real ChatServer with a FakeAnswerer, on a free port, with the demo store.

    Parametrize indirectly with a dict of ``CHATBOT_*`` variables to change settings.
    """
    from chatbot.server.app import ChatServer

    env = dict(getattr(request, "param", {}))
    settings = Settings.from_env(env=env, data_dir=tmp_path, port=0, adapter_path="none")
    db = Database(settings.database_url)
    secret = seed_demo_store(db)
    fake = FakeAnswerer(delay_s=0.02)
    app = ChatServer(settings, db, fake)
    port = await app.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", port, app, db, fake, secret)
    finally:
        await app.stop()
        db.dispose()


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Any, live: LiveServer) -> AsyncIterator[Any]:
    page = await new_page(browser, live)
    try:
        yield page
    finally:
        await page.context.close()
