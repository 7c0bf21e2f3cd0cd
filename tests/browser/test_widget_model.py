"""The widget against the real answering pipeline and language model (slow; optional).

Skipped when the base model has not been pulled (``chatbot model pull``). Builds the demo
store and its search index in a throwaway data dir, so it takes a few minutes on a CPU.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from widget_support import ARTIFACTS, LiveServer, new_page

from chatbot.settings import Settings
from chatbot.storage.db import Database

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.slow]

W = "storefront-chat"
# Records each distinct text of the newest bot reply body added after this runs.
RECORD_REPLY_TEXTS = """() => {
  const shadow = document.querySelector("storefront-chat").shadowRoot;
  const bodies = () => shadow.querySelectorAll(".items .row.bot .body");
  const before = bodies().length;
  window.__replyTexts = [];
  new MutationObserver(() => {
    const all = bodies();
    if (all.length <= before) return;
    const text = all[all.length - 1].innerText;
    const texts = window.__replyTexts;
    if (texts[texts.length - 1] !== text) texts.push(text);
  }).observe(shadow, { subtree: true, childList: true, characterData: true });
}"""


@pytest.fixture
async def real_live(tmp_path: Path, chromium_path: str) -> Any:
    base = Settings.from_env()
    if not base.model_path.exists():
        pytest.skip(f"the model is not pulled ({base.model_path}); run `chatbot model pull`")
    from chatbot.answering import build_answerer
    from chatbot.server.app import ChatServer
    from knowledge_base.demo import ensure_demo_store

    settings = base.replace(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'chatbot.db'}", port=0
    )
    db = Database(settings.database_url)
    store = await asyncio.to_thread(ensure_demo_store, db)
    answerer: Any = await asyncio.to_thread(build_answerer, settings, db)
    await asyncio.to_thread(answerer.prepare, store.id)
    await answerer.start()
    app = ChatServer(settings, db, answerer)
    port = await app.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", port, app, db, None, "")  # type: ignore[arg-type]
    finally:
        await app.stop()
        await answerer.close()
        db.dispose()


async def test_real_model_streams_a_grounded_reply(browser: Any, real_live: LiveServer) -> None:
    page = await new_page(browser, real_live)
    try:
        await page.goto(real_live.url + "/demo")
        await page.wait_for_function("() => !!window.StorefrontChat")
        await page.click(f"{W} .launcher")
        await page.fill(f"{W} textarea", "How long does standard shipping take?")
        # Every text the new reply shows, recorded in the page as the DOM changes: polling
        # from here missed the stream once replies took a fraction of a second.
        await page.evaluate(RECORD_REPLY_TEXTS)
        await page.press(f"{W} textarea", "Enter")
        rated = page.locator(f"{W} .items .row.bot .rating")
        for _ in range(1200):  # up to ~2 minutes on a busy CPU
            if await rated.count():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("no finished reply within 2 minutes")
        final = (await page.locator(f"{W} .items .row.bot .body").last.inner_text()).strip()
        assert final, "the reply is not empty"
        seen = [t for t in await page.evaluate("() => window.__replyTexts") if t.strip()]
        assert len(set(seen)) >= 2, f"the reply did not stream: {seen}"
        assert seen[-1].strip() == final
        assert await page.locator(f"{W} .items .row.bot .source").count() >= 1, "a cited source"
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "real-model-reply.png"))
        assert real_live.dialogs == [] and page.errors == []
    finally:
        await page.context.close()
