"""The agent console in real headless Chromium, beside the storefront widget, on the real server.

An agent logs in, watches a shopper's conversation live (the bot's tokens streaming),
takes it over, asks the copilot for a reply, edits and sends it, and the shopper sees it
arrive in the widget. Replies come from the FakeAnswerer; everything else is real.
Screenshots are saved to ``tests/browser/artifacts/``.
"""

from __future__ import annotations

from typing import Any

import pytest
from widget_support import ARTIFACTS, LiveServer, new_page

from chatbot.agents import accounts
from chatbot.types import Source

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery"
W = "storefront-chat"
SHOPPER_INPUT = f"{W} textarea"
RETURNS = Source("policy", "returns-policy", "Returns & refunds policy")
SHIPPING_ANSWER = (
    "Thanks for reaching out. Orders ship within one business day and standard delivery "
    "takes three to five business days after that, so yours should arrive soon."
)
SLOW_REPLY = [f"{word} " for word in SHIPPING_ANSWER.split()]


def add_agent(live: LiveServer, email: str = "ana@shop.example", name: str = "Ana") -> None:
    with live.db.transaction() as session:
        accounts.add_agent(session, email, PASSWORD, stores=["demo"], name=name)


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def log_in(page: Any, live: LiveServer, password: str = PASSWORD) -> None:
    await page.goto(live.url + "/console")
    await page.locator("#login-form").wait_for()
    await page.fill("#login-email", "ana@shop.example")
    await page.fill("#login-password", password)
    await page.click("#login-submit")


async def shopper_asks(page: Any, live: LiveServer, text: str) -> None:
    await page.goto(live.url + "/demo")
    await page.wait_for_function("() => !!window.StorefrontChat")
    await page.click(f"{W} .launcher")
    await page.fill(SHOPPER_INPUT, text)
    await page.press(SHOPPER_INPUT, "Enter")


async def test_login_watch_take_over_and_send_a_suggested_reply(
    browser: Any, live: LiveServer
) -> None:
    add_agent(live)
    console = await new_page(browser, live, viewport={"width": 1440, "height": 900})
    shopper = await new_page(browser, live, viewport={"width": 1100, "height": 800})

    # A wrong password: a clear message, still on the login form.
    await log_in(console, live, password="not the password")
    error = console.locator("#login-error")
    await error.wait_for()
    assert "Wrong email or password" in await error.inner_text()
    await shot(console, "console-login-error")

    await log_in(console, live)
    await console.locator("#app").wait_for()
    await console.locator("#connection.live").wait_for()
    assert await console.locator("#agent-name").inner_text() == "Ana"
    # The session cookie is HttpOnly: the page's scripts cannot read it.
    assert await console.evaluate("document.cookie") == ""

    # A shopper asks; the reply streams slowly so the agent can watch it.
    live.fake.queue(SLOW_REPLY, delay_s=0.12)
    await shopper_asks(shopper, live, "When will my order arrive? It's been a week.")
    row = console.locator(".inbox-item").first
    await row.wait_for()
    assert "When will my order arrive?" in await row.locator(".preview").inner_text()
    await row.click()
    await console.locator(".msg.shopper .bubble", has_text="It's been a week").wait_for()

    streaming = console.locator(".msg.bot.streaming .bubble")
    await streaming.wait_for()
    first = await streaming.inner_text()
    await console.wait_for_function(
        "n => { const b = document.querySelector('.msg.bot.streaming .bubble');"
        " return b && b.textContent.length > n; }", arg=len(first) + 10)
    await shot(console, "console-watching-live-tokens")
    await console.locator(".msg.bot:not(.streaming)").wait_for(timeout=20000)
    assert (await console.locator(".msg.bot .bubble").inner_text()).startswith("Thanks for")

    # The shopper writes again: the agent takes over before the bot can answer.
    live.fake.queue(SLOW_REPLY, delay_s=0.12)
    await shopper.fill(SHOPPER_INPUT, "I'd like a refund instead, please.")
    await shopper.press(SHOPPER_INPUT, "Enter")
    await console.locator(".msg.shopper .bubble", has_text="refund instead").wait_for()
    await console.click("#btn-take")
    await console.locator("#conv-state.agent").wait_for()
    await console.locator(".status-line", has_text="Ana joined the conversation").wait_for()
    await shopper.locator(f"{W} .row.system", has_text="Ana joined").wait_for()
    assert await console.locator("#btn-take").is_hidden()

    # Copilot: a grounded suggestion streams in with its source; insert, edit, send.
    live.fake.queue(
        ["You can ", "return any ", "unused item ", "within 30 days ", "for a full refund."],
        delay_s=0.05, sources=[RETURNS],
    )
    await console.click("#btn-suggest")
    await console.locator("#btn-insert:not([disabled])").wait_for()
    suggestion = await console.locator("#suggestion-text").inner_text()
    assert suggestion == "You can return any unused item within 30 days for a full refund."
    assert "Returns & refunds policy" in await console.locator("#suggestion-sources").inner_text()
    assert live.fake.requests[-1].message == "I'd like a refund instead, please."
    await console.click("#btn-insert")
    assert await console.input_value("#composer-text") == suggestion
    await console.locator("#composer-text").press("End")
    await console.locator("#composer-text").type(" I've started it for you.")
    await shot(console, "console-copilot-suggestion")
    await console.click("#composer-send")
    sent = suggestion + " I've started it for you."
    await console.locator(".msg.agent .bubble", has_text="I've started it").wait_for()
    assert await console.input_value("#composer-text") == ""

    # The shopper sees the agent's message in the widget.
    agent_row = shopper.locator(f"{W} .items .row.agent")
    await agent_row.wait_for()
    assert sent in " ".join((await agent_row.inner_text()).split())
    await shot(shopper, "widget-receives-agent-reply")

    # An internal note: shown to agents, never to the shopper.
    await console.click(".composer-tabs [data-mode=note]")
    await console.fill("#composer-text", "Refund approved - no photo needed.")
    await console.click("#composer-send")
    await console.locator(".msg.note .bubble", has_text="Refund approved").wait_for()
    await shopper.wait_for_timeout(700)
    assert "Refund approved" not in await shopper.evaluate(
        "() => document.querySelector('storefront-chat').shadowRoot.textContent")
    await shot(console, "console-conversation")

    # Hand back to the bot and resolve: buttons follow the state.
    await console.click("#btn-handback")
    await console.locator("#conv-state.bot").wait_for()
    await console.click("#btn-resolve")
    await console.locator("#conv-state.resolved").wait_for()
    await console.locator("#btn-reopen").wait_for()

    # Log out: back to the login form, and the session is gone server-side.
    await console.click("#logout")
    await console.locator("#login-form").wait_for()
    status = await console.evaluate("fetch('/console/session').then(r => r.status)")
    assert status == 401
    assert live.dialogs == [] and console.errors == [] and shopper.errors == []


async def test_inbox_filters_search_and_markup_stays_text(browser: Any, live: LiveServer) -> None:
    add_agent(live)
    console = await new_page(browser, live, viewport={"width": 1440, "height": 900})
    shopper = await new_page(browser, live)
    hostile = '<img src=x onerror="alert(1)"> where is order #W2611340?'
    await shopper_asks(shopper, live, hostile)
    await shopper.locator(f"{W} .items .row.bot").first.wait_for()
    await shopper.click(f"{W} .actions .pill >> text=Talk to a person")

    await log_in(console, live)
    row = console.locator(".inbox-item").first
    await row.wait_for()
    await console.locator(".inbox-item .pill.waiting").wait_for()
    assert (await console.title()).startswith("(1) Agent console")  # waiting, in the tab title
    # The handoff summary line shows the detected topic and order number.
    assert "#W2611340" in await row.locator(".summary-line").inner_text()
    assert await row.locator(".preview").inner_text() != ""
    assert await console.locator(".inbox-item img").count() == 0

    await console.click("#filters [data-filter=resolved]")
    await console.locator("#inbox-empty").wait_for()
    await console.click("#filters [data-filter=waiting]")
    await console.locator(".inbox-item").first.wait_for()
    await console.fill("#search", "no such thing")
    await console.locator("#inbox-empty").wait_for()
    await console.fill("#search", "W2611340")
    await console.locator(".inbox-item").first.wait_for()

    await console.locator(".inbox-item").first.click()
    bubble = console.locator(".msg.shopper .bubble").first
    await bubble.wait_for()
    assert await bubble.inner_text() == hostile  # shown as text, never parsed as HTML
    assert await console.locator("#transcript img").count() == 0
    assert "#W2611340" in await console.locator("#summary-text").inner_text()
    await shot(console, "console-inbox-waiting")
    assert live.dialogs == [] and console.errors == []


async def test_admin_adds_a_team_member_who_can_sign_in(browser: Any, live: LiveServer) -> None:
    with live.db.transaction() as session:
        accounts.add_agent(session, "boss@shop.example", PASSWORD, is_admin=True, name="Robin")
    admin = await new_page(browser, live, viewport={"width": 1440, "height": 900})
    await admin.goto(live.url + "/console")
    await admin.fill("#login-email", "boss@shop.example")
    await admin.fill("#login-password", PASSWORD)
    await admin.click("#login-submit")
    await admin.locator("#team-open").click()
    await admin.locator("#team-rows tr").first.wait_for()
    assert "boss@shop.example" in await admin.locator("#team-rows").inner_text()

    await admin.fill("#team-email", "sam@shop.example")
    await admin.fill("#team-name", "Sam")
    await admin.fill("#team-password", "short")
    await admin.click("#team-add button[type=submit]")
    await admin.locator("#team-error").wait_for()
    assert "at least 10 characters" in await admin.locator("#team-error").inner_text()
    await admin.fill("#team-password", "a long passphrase")
    await admin.click("#team-add button[type=submit]")
    await admin.locator("#team-rows tr", has_text="sam@shop.example").wait_for()
    assert await admin.input_value("#team-email") == ""
    await shot(admin, "console-team")

    sam = await new_page(browser, live)
    await sam.goto(live.url + "/console")
    await sam.fill("#login-email", "sam@shop.example")
    await sam.fill("#login-password", "a long passphrase")
    await sam.click("#login-submit")
    await sam.locator("#app").wait_for()
    assert await sam.locator("#agent-name").inner_text() == "Sam"
    assert await sam.locator("#team-open").is_hidden()  # not an admin
    assert admin.errors == [] and sam.errors == []
