"""XSS: a list of classic payloads as shopper, model and agent text in the widget and console.

Every payload goes through the real server into headless Chromium: typed by the shopper,
streamed as reply tokens and a cited source (title and ``javascript:`` URL) by the
"model", sent by an agent whose display name is itself a payload, and shown in the
console's inbox and transcript. Nothing may become markup: no dialog, no page error, no
injected element, no ``on*`` attribute, no script URL; and the text is shown verbatim.
"""

from __future__ import annotations

from typing import Any

import pytest
from widget_support import LiveServer, new_page

from chatbot.agents import accounts
from chatbot.conversations.ownership import Action
from chatbot.types import Source

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery"
W = "storefront-chat"
SHADOW = "document.querySelector('storefront-chat').shadowRoot"
AGENT_NAME = '<img src=x onerror=alert("name")>Ana'
PAYLOADS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(2)">',
    "<svg onload=alert(3)>",
    "<svg><script>alert(4)</script></svg>",
    '<iframe src="javascript:alert(5)"></iframe>',
    "<body onload=alert(6)>",
    '<a href="javascript:alert(7)">click</a>',
    "[link](javascript:alert(8))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCg5KTwvc2NyaXB0Pg==)",
    '"><img src=x onerror=alert(10)>',
    "'><details open ontoggle=alert(11)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(12)>",
    "<input autofocus onfocus=alert(13)>",
    "<object data=javascript:alert(14)>",
    '<meta http-equiv="refresh" content="0;url=javascript:alert(15)">',
    "&lt;img src=x onerror=alert(16)&gt;",
    "<scr<script>ipt>alert(17)</scr</script>ipt>",
    "javascript:alert(18)",
    "<style>*{display:none}</style>",
    "**<img src=x onerror=alert(19)>**",
    "`<img src=x onerror=alert(20)>`",
]
TEXT = " | ".join(PAYLOADS)
# Elements that text can only produce by being parsed as HTML; looked for where messages,
# names and sources are shown (the widget's and console's own icons are elsewhere).
INJECTED = (
    "script,img,svg:not(.i),iframe,object,embed,math,details,meta,style,body,input,"
    "a[href^=javascript]"
)
CHECK_JS = """(root, scopes) => {
    const all = [...root.querySelectorAll('*')];
    const areas = scopes.flatMap(s => [...root.querySelectorAll(s)]);
    return {
        injected: areas.flatMap(a => [...a.querySelectorAll(`%s`)])
                       .map(e => e.outerHTML.slice(0, 80)),
        handlers: all.flatMap(e => [...e.attributes].filter(a => a.name.startsWith('on'))
                                   .map(a => e.tagName + ' ' + a.name)),
        urls: all.flatMap(e => ['href', 'src', 'action'].map(n => e.getAttribute(n) || '')
                     .filter(v => /^\\s*(javascript|data|vbscript):/i.test(v))),
    };
}"""
WIDGET_AREAS = [".items", ".sub", ".activity"]
CONSOLE_AREAS = [
    "#inbox-list",
    "#transcript",
    "#conv-sub",
    "#agent-name",
    "#customer-panel",
    "#summary-panel",
]


async def _clean(page: Any, root_js: str, areas: list[str]) -> None:
    found = await page.evaluate(f"(areas) => ({CHECK_JS % INJECTED})({root_js}, areas)", areas)
    # "data:," is the pages' own empty favicon link, not script.
    found["urls"] = [u for u in found["urls"] if u != "data:,"]
    assert found == {"injected": [], "handlers": [], "urls": []}, found


async def test_payloads_stay_text_in_widget_and_console(browser: Any, live: LiveServer) -> None:
    with live.db.transaction() as session:
        accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"], name=AGENT_NAME)
    shopper = await new_page(browser, live)
    console = await new_page(browser, live, viewport={"width": 1440, "height": 900})

    # Model text: every payload a token; a cited source with markup and a script URL.
    live.fake.queue(
        [p + " " for p in PAYLOADS],
        delay_s=0.01,
        sources=[Source("faq", "x", PAYLOADS[1], "javascript:alert(99)")],
    )
    await shopper.goto(live.url + "/demo")
    await shopper.wait_for_function("() => !!window.StorefrontChat")
    await shopper.click(f"{W} .launcher")
    await shopper.fill(f"{W} textarea", TEXT)
    await shopper.press(f"{W} textarea", "Enter")
    await shopper.locator(f"{W} .items .row.bot .sources").wait_for()
    shown = await shopper.locator(f"{W} .items .row.shopper .body").inner_text()
    assert shown == TEXT
    bot = await shopper.locator(f"{W} .items .row.bot .body").last.inner_text()
    for payload in ("<script>alert(1)</script>", '<img src=x onerror="alert(2)">'):
        assert payload in bot

    # Agent text: the agent (named with a payload) takes over and sends every payload.
    conv_id = await shopper.evaluate("StorefrontChat.conversationId()")
    from sqlalchemy import select

    from chatbot.conversations.log import to_ref
    from chatbot.conversations.models import Conversation

    with live.db.session() as session:
        conv = to_ref(
            session.scalars(select(Conversation).where(Conversation.public_id == conv_id)).one()
        )
    service = live.app.conversations
    await service.transition(conv, Action.TAKE_OVER, agent_name=AGENT_NAME)
    await service.add_agent_message(conv, TEXT, agent_id=None, agent_name=AGENT_NAME)
    agent_row = shopper.locator(f"{W} .items .row.agent")
    await agent_row.wait_for()
    assert TEXT.replace("**", "") in (await agent_row.inner_text()).replace("**", "") or (
        "<script>alert(1)</script>" in await agent_row.inner_text()
    )
    await shopper.wait_for_timeout(300)
    await _clean(shopper, SHADOW, WIDGET_AREAS)
    await _clean(shopper, "document", [])  # the page around it: no handlers

    # Console: inbox, transcript (shopper, bot, agent text) and the agent's own name.
    await console.goto(live.url + "/console")
    await console.locator("#login-form").wait_for()
    await console.fill("#login-email", "ana@shop.example")
    await console.fill("#login-password", PASSWORD)
    await console.click("#login-submit")
    await console.locator("#filters [data-filter=all], .inbox-item").first.wait_for()
    if await console.locator("#filters [data-filter=all]").count():
        await console.click("#filters [data-filter=all]")
    await console.locator(".inbox-item").first.click()
    bubble = console.locator(".msg.shopper .bubble").first
    await bubble.wait_for()
    assert await bubble.inner_text() == TEXT
    await console.locator(".msg.bot .bubble").first.wait_for()
    await console.wait_for_timeout(300)
    await _clean(console, "document", CONSOLE_AREAS)
    assert live.dialogs == [], live.dialogs
    assert shopper.errors == [] and console.errors == []
