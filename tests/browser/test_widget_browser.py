"""The storefront widget in real headless Chromium against the real ChatServer.

Replies come from the FakeAnswerer (fast and scriptable); everything else is real: the
demo page, widget.js, the socket, the protocol, the database. Screenshots are saved to
``tests/browser/artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from widget_support import ARTIFACTS, HOSTILE_TITLE, LiveServer, assert_contrast, new_page

from chatbot import identity
from chatbot.protocol import chat
from chatbot.types import Source

pytestmark = [pytest.mark.browser, pytest.mark.slow]

W = "storefront-chat"
LAUNCHER = f"{W} .launcher"
PANEL = f"{W} .panel"
INPUT = f"{W} textarea"
BOT = f"{W} .items .row.bot"
SHOPPER = f"{W} .items .row.shopper"
SHADOW = "document.querySelector('storefront-chat').shadowRoot"
SHIPPING = Source(
    "policy", "shipping-policy", "Shipping policy", "https://demo.example/policies/shipping"
)
REPLY = [
    "Standard ",
    "shipping ",
    "takes ",
    "5-7 ",
    "business ",
    "days ",
    "and ",
    "costs ",
    "$5.95.",
]


async def open_demo(page: Any, live: LiveServer, path: str = "/demo") -> None:
    await page.goto(live.url + path)
    await page.wait_for_function("() => !!window.StorefrontChat")


async def ask(page: Any, text: str) -> None:
    await page.fill(INPUT, text)
    await page.press(INPUT, "Enter")


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def widget_storage(page: Any) -> dict[str, Any]:
    return await page.evaluate(
        "() => Object.fromEntries(Object.keys(localStorage)"
        ".filter(k => k.startsWith('storefront-chat')).map(k => [k, localStorage.getItem(k)]))"
    )


async def last_bot_text(page: Any) -> str:
    return (await page.locator(f"{BOT} .body").last.inner_text()).strip()


async def drop_sockets(live: LiveServer) -> int:
    """Cut every shopper socket's TCP connection on the server side, with no closing
    handshake: the widget sees what a network drop looks like (close code 1006)."""
    sockets = list(live.app._chat_sockets)
    for sock in sockets:
        sock.conn.transport.abort()
    return len(sockets)


async def test_no_storage_cookie_or_socket_before_open(page: Any, live: LiveServer) -> None:
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await open_demo(page, live)
    await page.wait_for_selector(".grid .card")
    await page.wait_for_timeout(500)
    assert await page.evaluate("document.cookie") == ""
    assert await widget_storage(page) == {}
    assert await page.evaluate("sessionStorage.length") == 0
    assert sockets == [], "the socket must wait until the shopper opens the widget"
    await expect_hidden(page, PANEL)

    # The catalogue is rendered as text: a product title full of markup stays text.
    hostile = page.locator(".card-title", has_text="Hostile Hat")
    assert (await hostile.inner_text()) == HOSTILE_TITLE
    assert await page.locator(".grid img").count() == 0

    await page.click(LAUNCHER)
    await page.wait_for_function(f"() => {SHADOW}.activeElement?.tagName === 'TEXTAREA'")
    await page.wait_for_function(
        "() => Object.keys(localStorage).some(k => k.startsWith('storefront-chat'))"
    )
    await wait_until(lambda: len(sockets) == 1)
    assert sockets[0].endswith("/ws/chat")
    assert await page.evaluate("document.cookie") == "", "the widget never writes cookies"
    assert live.dialogs == [] and page.errors == []


async def test_streamed_reply_then_final_reply_with_source(page: Any, live: LiveServer) -> None:
    live.fake.queue(REPLY, delay_s=0.2, first_delay_s=0.8, sources=[SHIPPING])
    await open_demo(page, live)
    await page.click(LAUNCHER)
    # Count what the aria-live region announces: the finished reply, once, not each token.
    await page.evaluate(
        f"""() => {{
        const live = {SHADOW}.querySelector('[aria-live=polite]');
        window.__announced = [];
        new MutationObserver(() => {{
          if (live.textContent) window.__announced.push(live.textContent);
        }}).observe(live, {{childList: true, characterData: true, subtree: true}});
    }}"""
    )
    await ask(page, "How long does shipping take?")
    await page.locator(f"{W} .activity").wait_for(state="visible")
    assert "Thinking" in await page.locator(f"{W} .activity").inner_text()

    # Sample the reply while it streams: it must grow through several partial texts.
    seen: list[str] = []
    final = "".join(REPLY)
    for _ in range(200):
        if await page.locator(f"{BOT} .body").count():
            text = await last_bot_text(page)
            if text and (not seen or seen[-1] != text):
                seen.append(text)
            if text == final and await page.locator(f"{BOT} .sources").count():
                break
        await asyncio.sleep(0.05)
    partials = [t for t in seen if t != final]
    assert len(partials) >= 3, f"tokens did not stream: {seen}"
    assert all(final.startswith(t) for t in partials), seen
    await shot_while(page, "streaming-midway", seen)

    source = page.locator(f"{BOT} a.source").last
    assert "Shipping policy" in await source.inner_text()
    assert await source.get_attribute("href") == SHIPPING.url
    assert await source.get_attribute("rel") == "noopener noreferrer"
    reply_time = await page.locator(f"{BOT} .bubble").last.get_attribute("title") or ""
    assert re.fullmatch(r"\d{1,2}:\d{2}( [AP]M)?", reply_time), f"time on hover: {reply_time!r}"
    await expect_hidden(page, f"{W} .activity")
    await page.wait_for_function("() => window.__announced.length > 0")
    await page.wait_for_timeout(300)
    announced = await page.evaluate("window.__announced")
    assert announced == [f"Assistant: {final}"], announced
    await shot(page, "desktop-reply-with-source")
    await assert_contrast(page)
    assert live.dialogs == [] and page.errors == []


async def shot_while(page: Any, name: str, seen: list[str]) -> None:
    """Keep one mid-stream screenshot when the test saw one (best effort, not asserted)."""
    if seen:
        await shot(page, name)


async def test_reload_mid_reply_keeps_history_and_finishes(page: Any, live: LiveServer) -> None:
    live.fake.queue(REPLY, delay_s=0.05, pause_at=4, sources=[SHIPPING])
    await open_demo(page, live)
    await page.click(LAUNCHER)
    await ask(page, "How long does shipping take?")
    await live.fake.wait_paused()
    await page.wait_for_function(
        f"() => ({SHADOW}.querySelector('.row.bot .body')?.textContent || '').includes('takes')"
    )
    # The widget writes its storage at most every 300 ms while a reply streams (and at
    # once on pagehide): wait for that write rather than read once and race it.
    await page.wait_for_function(
        "() => Object.keys(localStorage).some(k => k.startsWith('storefront-chat')"
        " && (JSON.parse(localStorage.getItem(k)).conversation || {}).id)"
    )
    stored = await widget_storage(page)
    assert len(stored) == 1
    assert "c_" in json.loads(next(iter(stored.values())))["conversation"]["id"]

    await page.reload()
    await page.wait_for_function("() => !!window.StorefrontChat")
    # The panel stays open across the reload and shows the conversation so far.
    await page.locator(PANEL).wait_for(state="visible")
    assert (
        await page.locator(f"{SHOPPER} .body").first.inner_text()
    ) == "How long does shipping take?"
    live.fake.release()
    await page.locator(f"{BOT} .sources").wait_for()
    assert await last_bot_text(page) == "".join(REPLY)
    assert await page.locator(SHOPPER).count() == 1
    assert await page.locator(BOT).count() == 1, "the resumed reply must not be duplicated"
    await shot(page, "after-reload-history")


async def test_dropped_socket_resumes_the_reply(page: Any, live: LiveServer) -> None:
    live.fake.queue(REPLY, delay_s=0.05, pause_at=3, sources=[SHIPPING])
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    await open_demo(page, live)
    await page.click(LAUNCHER)
    await ask(page, "How long does shipping take?")
    await live.fake.wait_paused()
    await wait_until(lambda: len(sockets) == 1)

    assert await drop_sockets(live) >= 1
    await page.locator(f"{W} .conn").wait_for(state="visible")  # "Reconnecting..."
    live.fake.release()  # the rest of the reply is produced while the widget is away
    await wait_until(lambda: len(sockets) >= 2, timeout=15)
    await page.locator(f"{BOT} .sources").wait_for()
    assert await last_bot_text(page) == "".join(REPLY), "no token lost or repeated"
    await expect_hidden(page, f"{W} .conn")
    await expect_hidden(page, f"{W} .activity")
    assert await page.locator(BOT).count() == 1


async def test_stop_button_interrupts_the_reply(page: Any, live: LiveServer) -> None:
    live.fake.queue(REPLY, delay_s=0.05, pause_at=3)
    await open_demo(page, live)
    await page.click(LAUNCHER)
    await ask(page, "How long does shipping take?")
    await live.fake.wait_paused()
    stop = page.locator(f"{W} .actions .pill", has_text="Stop")
    await stop.click()
    await page.locator(f"{BOT} .meta", has_text="Reply interrupted").wait_for()
    assert await last_bot_text(page) == "".join(REPLY[:3]).strip()
    await expect_hidden(page, f"{W} .actions .pill >> text=Stop")
    live.fake.release()


async def test_offline_message_is_sent_when_back_online(page: Any, live: LiveServer) -> None:
    live.fake.queue(["Yes, ", "we ", "do."])
    await open_demo(page, live)
    await page.click(LAUNCHER)
    await page.wait_for_function("() => !!StorefrontChat.conversationId()")
    await page.context.set_offline(True)
    await drop_sockets(live)  # offline emulation alone does not close an open socket
    conn = page.locator(f"{W} .conn")
    await conn.wait_for(state="visible")
    assert "offline" in await conn.inner_text()
    await ask(page, "Do you sell gift cards?")
    await page.locator(f"{SHOPPER} .meta", has_text="Sending").wait_for()
    await page.wait_for_timeout(1000)
    assert live.fake.requests == [], "nothing can be sent while offline"

    await page.context.set_offline(False)
    await page.locator(f"{BOT} .rating").wait_for(timeout=15000)
    assert await last_bot_text(page) == "Yes, we do."
    assert [r.message for r in live.fake.requests] == ["Do you sell gift cards?"]
    await expect_hidden(page, f"{W} .conn")
    await expect_hidden(page, f"{SHOPPER} .meta")


@pytest.mark.parametrize("live", [{"CHATBOT_IDLE_TIMEOUT_S": "1.5"}], indirect=True)
async def test_idle_timeout_does_not_reconnect_in_a_loop(page: Any, live: LiveServer) -> None:
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    await open_demo(page, live)
    await page.click(LAUNCHER)
    await wait_until(lambda: len(sockets) == 1)
    await wait_until(lambda: sockets[0].is_closed(), timeout=10)  # the server's idle timeout
    await page.wait_for_timeout(2500)
    assert len(sockets) == 1, "an idle-closed widget waits for the shopper"
    await expect_hidden(page, f"{W} .conn")

    live.fake.queue(["Welcome ", "back."])
    await ask(page, "Are you still there?")
    await page.locator(f"{BOT} .rating").wait_for()
    assert await last_bot_text(page) == "Welcome back."
    assert len(sockets) == 2


async def test_markup_in_replies_renders_as_text(page: Any, live: LiveServer) -> None:
    payload = "<img src=x onerror=alert(1)>"
    live.fake.queue(
        [
            "Here: ",
            payload,
            " and <script>alert(2)</script> ",
            "[click](javascript:alert(3)) ",
            "**done**",
        ],
        sources=[Source("faq", "x", f"{payload} FAQ", "javascript:alert(4)")],
    )
    await open_demo(page, live)
    await page.click(LAUNCHER)
    await ask(page, f"{payload} is my question")
    await page.locator(f"{BOT} .sources").wait_for()
    body = await last_bot_text(page)
    assert payload in body and "<script>alert(2)</script>" in body
    assert (await page.locator(f"{SHOPPER} .body").inner_text()) == f"{payload} is my question"
    counts = await page.evaluate(
        f"() => [{SHADOW}.querySelectorAll('img,script,iframe').length,"
        " document.querySelectorAll('img').length]"
    )
    assert counts == [0, 0]
    hrefs = await page.evaluate(f"() => [...{SHADOW}.querySelectorAll('a')].map(a => a.href)")
    assert not any(h.startswith("javascript") for h in hrefs), hrefs
    assert await page.locator(f"{BOT} strong", has_text="done").count() == 1, (
        "the safe subset still works"
    )
    await page.wait_for_timeout(300)
    assert live.dialogs == [], "no script ran"
    await shot(page, "markup-as-text")


async def test_keyboard_only_conversation(page: Any, live: LiveServer) -> None:
    live.fake.queue(["We ", "ship ", "to ", "Canada."])
    await open_demo(page, live)
    # From the top of the page, Shift+Tab wraps to the last control: the launcher.
    await page.keyboard.press("Shift+Tab")
    assert await page.evaluate(f"() => {SHADOW}.activeElement?.classList.contains('launcher')")
    await page.keyboard.press("Enter")
    await page.locator(PANEL).wait_for(state="visible")
    assert await page.evaluate(f"() => {SHADOW}.activeElement?.id") == "sc-input", (
        "focus moves into the panel"
    )
    await page.keyboard.type("Do you ship to Canada?")
    await page.keyboard.press("Enter")
    await page.locator(f"{BOT} .rating").wait_for()
    assert await last_bot_text(page) == "We ship to Canada."

    # Walk back to the reply's "Helpful" button with the keyboard and press it.
    for _ in range(12):
        await page.keyboard.press("Shift+Tab")
        if await page.evaluate(f"() => {SHADOW}.activeElement?.getAttribute('data-f')") == "up":
            break
    else:
        pytest.fail("the rating buttons are not reachable with Tab")
    await page.keyboard.press("Space")
    helpful = page.locator(f"{BOT} button.rate[data-f=up]")
    await page.wait_for_function(
        f"() => {SHADOW}.querySelector('button.rate[data-f=up]')"
        ".getAttribute('aria-pressed') === 'true'"
    )
    assert await page.evaluate(f"() => {SHADOW}.activeElement?.getAttribute('data-f')") == "up"
    assert await helpful.get_attribute("aria-label") == "Helpful"
    public_id = await page.evaluate("StorefrontChat.conversationId()")
    await wait_for_stored(lambda: stored_ratings(live, public_id), (None, [1]))
    await shot(page, "keyboard-rated")

    await page.keyboard.press("Escape")
    await expect_hidden(page, PANEL)
    assert await page.evaluate(f"() => {SHADOW}.activeElement?.classList.contains('launcher')"), (
        "focus returns to the launcher"
    )
    assert await page.locator(LAUNCHER).get_attribute("aria-label") == "Open chat"
    assert await page.locator(LAUNCHER).get_attribute("aria-expanded") == "false"
    await page.keyboard.press("Enter")
    await page.locator(PANEL).wait_for(state="visible")
    assert await page.evaluate(f"() => {SHADOW}.activeElement?.id") == "sc-input"


async def test_mobile_viewport_is_full_screen(browser: Any, live: LiveServer) -> None:
    page = await new_page(
        browser,
        live,
        viewport={"width": 375, "height": 667},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    try:
        live.fake.queue(
            ["Returns ", "are ", "free ", "within ", "30 ", "days."],
            sources=[
                Source(
                    "policy",
                    "returns-policy",
                    "Returns and exchanges",
                    "https://demo.example/returns",
                )
            ],
        )
        await open_demo(page, live)
        await shot(page, "mobile-closed")
        await page.click(LAUNCHER)
        # Measure once the opening animation has finished.
        await page.wait_for_function(
            f"() => {SHADOW}.querySelector('.panel').getAnimations().length === 0"
        )
        box = await page.locator(PANEL).bounding_box()
        assert box is not None
        full_screen = {"x": 0, "y": 0, "width": 375, "height": 667}
        assert {k: round(v) for k, v in box.items()} == full_screen
        await expect_hidden(page, LAUNCHER)
        await ask(page, "What is your return policy?")
        await page.locator(f"{BOT} .sources").wait_for()
        await shot(page, "mobile-open-reply")
        await assert_contrast(page)
        # On a phone the full-screen panel does not reopen by itself on the next page.
        await page.reload()
        await page.wait_for_function("() => !!window.StorefrontChat")
        await page.locator(LAUNCHER).wait_for(state="visible")
        await expect_hidden(page, PANEL)
        await page.click(LAUNCHER)
        assert await page.locator(f"{BOT} .body").inner_text() == "Returns are free within 30 days."
        await page.locator(f"{W} button[aria-label='Close chat']").last.click()
        await page.locator(LAUNCHER).wait_for(state="visible")
    finally:
        await page.context.close()


async def test_unread_badge_while_closed(page: Any, live: LiveServer) -> None:
    live.fake.queue(["Yes, ", "gift ", "wrapping ", "is ", "available."], first_delay_s=0.8)
    await open_demo(page, live)
    await page.click(LAUNCHER)
    await ask(page, "Do you gift wrap?")
    await page.keyboard.press("Escape")
    badge = page.locator(f"{W} .badge")
    await badge.wait_for(state="visible", timeout=10000)
    assert await badge.inner_text() == "1"
    assert "1 unread" in (await page.locator(LAUNCHER).get_attribute("aria-label") or "")
    await shot(page, "unread-badge")
    await page.click(LAUNCHER)
    await expect_hidden(page, f"{W} .badge")


async def test_handoff_end_rating_and_new_conversation(page: Any, live: LiveServer) -> None:
    await open_demo(page, live)
    await page.click(LAUNCHER)
    await ask(page, "Where is my parcel?")
    await page.locator(f"{BOT} .rating").wait_for()
    first_id = await page.evaluate("StorefrontChat.conversationId()")

    await page.locator(f"{W} .actions .pill", has_text="Talk to a person").click()
    await page.locator(f"{W} .row.system").first.wait_for()
    assert "team member" in (await page.locator(f"{W} .sub").inner_text())

    await page.locator(f"{W} button[aria-label='End conversation']").click()
    await page.locator(f"{W} .csat").wait_for()
    await page.locator(f"{W} .star[aria-label='4 out of 5']").click()
    await page.locator(f"{W} .csat .primary").wait_for()
    assert "Thank you" in await page.locator(f"{W} .csat").inner_text()
    await wait_for_stored(lambda: stored_ratings(live, first_id), (4, [None]))
    await shot(page, "satisfaction-rated")
    await assert_contrast(page)
    await page.locator(f"{W} .csat .primary").click()
    await page.wait_for_function(
        "(old) => StorefrontChat.conversationId() && StorefrontChat.conversationId() !== old",
        arg=first_id,
    )
    assert await page.locator(f"{W} .row").count() == 1, "only the greeting remains"


def stored_ratings(live: LiveServer, public_id: str) -> tuple[int | None, list[Any]]:
    """(conversation CSAT, [bot reply ratings]) as the server stored them."""
    from sqlalchemy import select

    from chatbot.conversations.models import ChatMessage, Conversation

    with live.db.session() as session:
        conv = session.scalars(
            select(Conversation).where(Conversation.public_id == public_id)
        ).one()
        replies = session.scalars(
            select(ChatMessage.rating).where(
                ChatMessage.conversation_id == conv.id, ChatMessage.role == "bot"
            )
        ).all()
        return conv.csat_rating, list(replies)


async def conversation_ref(live: LiveServer, public_id: str) -> Any:
    from sqlalchemy import select

    from chatbot.conversations.models import Conversation

    with live.db.session() as session:
        row_id = session.scalars(
            select(Conversation.id).where(Conversation.public_id == public_id)
        ).one()
    return await live.app.conversations.get(row_id)


async def test_agent_joins_types_writes_and_leaves_live(page: Any, live: LiveServer) -> None:
    from chatbot.conversations.ownership import Action

    await open_demo(page, live)
    await page.click(LAUNCHER)
    await ask(page, "I need help with a damaged parcel")
    await page.locator(f"{BOT} .rating").wait_for()
    conv = await conversation_ref(live, await page.evaluate("StorefrontChat.conversationId()"))
    service = live.app.conversations

    await service.transition(conv, Action.TAKE_OVER, agent_name="Sam")
    await page.locator(f"{W} .row.system", has_text="Sam joined the conversation").wait_for()
    assert await page.locator(f"{W} .sub").inner_text() == "Sam from the team is here"
    await expect_hidden(page, f"{W} .actions .pill >> text=Talk to a person")

    service.publish_ephemeral(conv, chat.Status(kind="typing", agent="Sam", state="agent"))
    await page.locator(f"{W} .activity", has_text="Sam is typing").wait_for()
    await service.add_agent_message(
        conv, "Hi, I'm Sam. Sorry about the parcel: **send me a photo** please.",
        agent_id=None, agent_name="Sam",
    )
    agent_row = page.locator(f"{W} .items .row.agent")
    await agent_row.wait_for()
    assert "Sam" in await agent_row.locator(".who").inner_text()
    assert await agent_row.locator("strong").inner_text() == "send me a photo"
    await expect_hidden(page, f"{W} .activity")
    await shot(page, "agent-joined")
    await assert_contrast(page)

    await service.transition(await service.get(conv.id), Action.HAND_BACK)
    await page.locator(f"{W} .row.system", has_text="Sam left the conversation").wait_for()
    assert await page.locator(f"{W} .sub").inner_text() == "Virtual assistant"


async def test_language_position_colour_title_and_identity(page: Any, live: LiveServer) -> None:
    """data-lang, data-position, data-color, data-title; then setIdentity() from the host page."""
    await open_demo(page, live, "/static/example.html")
    launcher = page.locator(LAUNCHER)
    assert await launcher.get_attribute("aria-label") == "Abrir chat"
    box = await launcher.bounding_box()
    assert box is not None and box["x"] < 100, "data-position=left"
    await launcher.click()
    colours = await page.evaluate(
        f"() => {{ const h = getComputedStyle({SHADOW}.querySelector('.head'));"
        " return [h.backgroundColor, h.color]; }"
    )
    assert colours == ["rgb(255, 212, 0)", "rgb(17, 17, 17)"], "dark text on a light brand colour"
    assert await page.locator(f"{W} .title").inner_text() == "Ayuda de Northwind"
    placeholder = await page.locator(INPUT).get_attribute("placeholder")
    assert placeholder == "Escribe un mensaje\u2026"
    await page.wait_for_function("() => !!StorefrontChat.conversationId()")
    guest_id = await page.evaluate("StorefrontChat.conversationId()")

    # A token for a customer the store does not have: the server refuses it and the
    # chat goes on as a guest, in the same conversation, with a notice.
    forged = identity.sign(live.store_secret, "no-such-customer")
    await page.evaluate("(t) => StorefrontChat.setIdentity(t)", forged)
    notice = page.locator(f"{W} .notice")
    await notice.wait_for(state="visible")
    assert "invitado" in await notice.inner_text()
    assert await page.evaluate("StorefrontChat.conversationId()") == guest_id
    await shot(page, "spanish-left-yellow")
    await assert_contrast(page)

    await page.evaluate("StorefrontChat.setTheme({theme: 'dark', color: '#7c3aed'})")
    await ask(page, "\u00bfHac\u00e9is env\u00edos a Canad\u00e1?")
    await page.locator(f"{BOT} .rating").wait_for()
    await shot(page, "spanish-dark-purple")
    await assert_contrast(page)


async def test_signed_identity_reaches_the_answerer_and_is_never_stored(
    page: Any, live: LiveServer
) -> None:
    from knowledge_base.models import Customer, Store

    with live.db.transaction() as session:
        store = session.query(Store).filter_by(widget_key="demo").one()
        customer = Customer(store_id=store.id, source_id="mia_1", email="mia@example.com",
                            first_name="Mia", last_name="Lopez")
        session.add(customer)
        session.flush()
        customer_id = customer.id
    token = identity.sign(live.store_secret, "mia_1")

    await open_demo(page, live)
    await page.evaluate("(t) => StorefrontChat.setIdentity(t)", token)
    assert await widget_storage(page) == {}, "setIdentity before open writes nothing"
    await page.click(LAUNCHER)
    await ask(page, "Where is my order?")
    await page.locator(f"{BOT} .rating").wait_for()
    assert [r.customer_id for r in live.fake.requests] == [customer_id]
    stored = json.dumps(await widget_storage(page))
    assert token not in stored and token.split(".")[1] not in stored
    assert await page.locator(f"{W} .notice").is_hidden()


async def expect_hidden(page: Any, selector: str) -> None:
    await page.locator(selector).first.wait_for(state="hidden", timeout=10000)


async def wait_for_stored(read: Any, expected: Any, timeout: float = 10.0) -> None:
    """Poll the database read ``read()`` (in a thread) until it returns ``expected``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (value := await asyncio.to_thread(read)) != expected:
        if loop.time() > deadline:
            raise AssertionError(f"{value!r} != {expected!r}")
        await asyncio.sleep(0.1)


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
