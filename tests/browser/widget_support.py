"""Helpers for the browser tests: the live server record, demo data, pages, Chromium lookup.

The server runs in the test's event loop, so a test can script replies
(``live.fake.queue(...)``), pause them, and drop sockets while Playwright (async API)
drives Debian's ``chromium``. Tests skip cleanly when Chromium or Playwright is missing.
Screenshots go to ``tests/browser/artifacts/`` (git-ignored) for review.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from chatbot.storage.db import Database
from knowledge_base.models import Product, Variant
from knowledge_base.stores import get_or_create_store
from tests.fakes import FakeAnswerer

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A catalogue line whose title tries to inject markup into the demo page.
HOSTILE_TITLE = '<img src=x onerror="alert(1)"> Hostile Hat'


def chromium_executable() -> str | None:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@dataclass
class LiveServer:
    """The running server as a test sees it."""

    url: str
    port: int
    app: Any
    db: Database
    fake: FakeAnswerer
    store_secret: str
    dialogs: list[str] = field(default_factory=list)


def seed_demo_store(db: Database) -> str:
    """The ``demo`` store with a few products; returns its identity secret."""
    with db.transaction() as session:
        store = get_or_create_store(session, "demo", title="Northwind Outfitters")
        rows = [
            (
                "mens-ridgeline-rain-jacket",
                "Men's Ridgeline Rain Jacket",
                "Rain Jackets",
                "149.00",
                None,
            ),
            (
                "womens-trailhead-fleece",
                "Women's Trailhead Fleece Jacket",
                "Fleece",
                "89.00",
                "99.00",
            ),
            ("hostile-hat", HOSTILE_TITLE, "Hats", "25.00", None),
        ]
        for source_id, title, kind, price, compare in rows:
            product = Product(
                store_id=store.id,
                source_id=source_id,
                title=title,
                product_type=kind,
                description=f"{title}: a demo product.",
                tags=[],
                option_names=["Color"],
            )
            session.add(product)
            session.flush()
            for colour in ("Black", "Moss Green"):
                session.add(
                    Variant(
                        store_id=store.id,
                        product_id=product.id,
                        source_id=f"{source_id}-{colour}",
                        sku=f"{source_id}-{colour}",
                        title=colour,
                        options={"Color": colour},
                        price=Decimal(price),
                        compare_at_price=Decimal(compare) if compare else None,
                    )
                )
        return store.identity_secret


async def new_page(browser: Any, live: LiveServer, **context_options: Any) -> Any:
    """A page in a fresh context (empty storage) that records dialogs and page errors."""
    context_options.setdefault("viewport", {"width": 1280, "height": 800})
    context = await browser.new_context(**context_options)
    page = await context.new_page()
    page.errors = []  # type: ignore[attr-defined]

    async def on_dialog(dialog: Any) -> None:
        live.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    return page


# Every visible text node in the widget against its composited background (WCAG 2.x
# relative luminance). Returns the failures: [text, ratio, needed].
CONTRAST_JS = """() => {
  const root = document.querySelector('storefront-chat').shadowRoot;
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const over = (top, under) => {
    const a = top.length > 3 ? top[3] : 1;
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a));
  };
  const background = (el) => {
    const layers = [];
    for (let n = el; n; n = n.parentElement || (n.getRootNode() && n.getRootNode().host)) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c.length && (c.length < 4 || c[3] > 0)) layers.push(c);
      if (c.length && (c.length < 4 || c[3] === 1)) break;
    }
    return layers.reverse().reduce((acc, c) => over(c, acc), [255, 255, 255]);
  };
  const bad = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    const el = t.parentElement;
    if (!t.textContent.trim() || !el || !el.checkVisibility({opacityProperty: true})) continue;
    if (el.closest('.sr')) continue;
    const cs = getComputedStyle(el);
    const bg = background(el);
    const fg = over(parse(cs.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(cs.fontSize), bold = parseInt(cs.fontWeight, 10) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const text = t.textContent.trim().slice(0, 40);
    if (ratio < needed) bad.push([text, Math.round(ratio * 100) / 100, needed]);
  }
  return bad;
}"""


async def assert_contrast(page: Any) -> None:
    """Fail when any visible widget text is below WCAG AA contrast."""
    failures = await page.evaluate(CONTRAST_JS)
    assert failures == [], f"text below WCAG AA contrast: {failures}"
