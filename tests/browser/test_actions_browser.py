"""Order actions in real headless Chromium (issue #19): the widget's confirmation card.

The replies come from the FakeAnswerer (a scripted proposal, then a scripted outcome for
the confirm); the proposals are real rows in the database, so the server's check of the
confirm's id, the stored shopper message, the ``action`` event and its seq are all real.
Screenshots are saved to ``tests/browser/artifacts/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from widget_support import ARTIFACTS, LiveServer, assert_contrast

from chatbot.actions.models import ActionProposal
from chatbot.storage.clock import utcnow
from knowledge_base.models import Store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

W = "storefront-chat"
INPUT = f"{W} textarea"
CARD = f"{W} .action-card"
SHADOW = "document.querySelector('storefront-chat').shadowRoot"
CANCEL = ("Cancel order #W5442520 (reason: no longer needed). $54.04 will be refunded to "
          "your Visa ending in 4242 today.")
ADDRESS = ('Ship order #W5442520 to <img src=x onerror="alert(1)"> 12 Elm St, Springfield '
           "instead.")


def add_proposal(live: LiveServer, conversation_id: str, summary: str, *,
                 kind: str = "cancel_order", status: str = "proposed") -> str:
    with live.db.transaction() as session:
        store_id = session.scalars(select(Store.id).where(Store.name == "demo")).one()
        p = ActionProposal(
            store_id=store_id, conversation_id=conversation_id, kind=kind,
            params={"order": "#W5442520"}, order_number="#W5442520", summary=summary,
            details={"order": "#W5442520"}, status=status,
            expires_at=utcnow() + timedelta(minutes=30),
        )
        session.add(p)
        session.flush()
        return p.public_id


def proposal(action_id: str, summary: str, kind: str = "cancel_order") -> dict[str, Any]:
    return {"id": action_id, "kind": kind, "status": "proposed", "summary": summary,
            "details": {"order": "#W5442520"}}


def outcome(action_id: str, status: str, summary: str, kind: str = "cancel_order",
            reason: str = "") -> dict[str, Any]:
    return {"type": "action", "id": action_id, "kind": kind, "status": status,
            "summary": summary, "reason": reason}


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def ask(page: Any, text: str) -> None:
    await page.fill(INPUT, text)
    await page.press(INPUT, "Enter")


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def start_chat(page: Any, live: LiveServer) -> str:
    """Open the widget on the demo page and store the conversation; its public id."""
    await page.goto(live.url + "/demo")
    await page.wait_for_function("() => !!window.StorefrontChat")
    await page.click(f"{W} .launcher")
    await ask(page, "Hi, I need help with an order")
    await page.locator(f"{W} .items .row.bot:not(:has(.streaming))").first.wait_for()
    return str(await page.evaluate("() => StorefrontChat.conversationId()"))


async def test_confirmation_card_confirm_by_click_and_keep_by_keyboard(
    page: Any, live: LiveServer
) -> None:
    conv_id = await start_chat(page, live)
    await page.evaluate(
        f"""() => {{
        const live = {SHADOW}.querySelector('[aria-live=polite]');
        window.__announced = [];
        new MutationObserver(() => {{
          if (live.textContent) window.__announced.push(live.textContent);
        }}).observe(live, {{childList: true, characterData: true, subtree: true}});
    }}"""
    )

    # 1. The bot proposes a cancellation: a card with the summary and two real buttons.
    first = add_proposal(live, conv_id, CANCEL)
    live.fake.queue([CANCEL, " Shall I go ahead?"], action=proposal(first, CANCEL))
    await ask(page, "Please cancel order #W5442520")
    card = page.locator(CARD).last
    await card.wait_for()
    assert await card.get_attribute("role") == "group"
    assert await card.locator(".action-summary").inner_text() == CANCEL
    confirm = card.get_by_role("button", name="Confirm")
    keep = card.get_by_role("button", name="Keep my order")
    assert await confirm.is_enabled() and await keep.is_enabled()
    # The group is named by its title; each button is described by the summary.
    labelled = await card.evaluate(
        "c => c.getRootNode().getElementById(c.getAttribute('aria-labelledby')).textContent")
    assert labelled == "Please confirm"
    assert await confirm.evaluate(
        "b => b.getRootNode().getElementById(b.getAttribute('aria-describedby')).textContent"
    ) == CANCEL
    await page.wait_for_function(
        "() => window.__announced.some(t => t.includes('Keep my order'))")
    await shot(page, "widget-action-card")
    await assert_contrast(page)

    # 2. Confirm with the mouse: one confirm frame, the card locks, the outcome shows.
    live.fake.queue(["Done. Order #W5442520 is cancelled. $54.04 will be refunded today."],
                    delay_s=0.05, action=outcome(first, "executed", CANCEL))
    await confirm.click()
    await page.locator(f"{W} .items .row.shopper", has_text="Confirm").wait_for()
    status = card.locator(".action-status")
    await page.wait_for_function(
        f"() => {SHADOW}.querySelector('.action-card .action-status').textContent === 'Done'")
    assert await confirm.is_disabled() and await keep.is_disabled()
    await wait_until(lambda: live.fake.requests[-1].confirm == (first, True))
    await page.wait_for_function(
        "() => window.__announced.some(t => t.startsWith('Done: Cancel order'))")
    assert await status.inner_text() == "Done"
    await shot(page, "widget-action-executed")
    await assert_contrast(page)

    # 3. A second proposal (its summary carries markup: it stays text), answered with the
    #    keyboard only: Tab from Confirm to Keep my order, then Space.
    second = add_proposal(live, conv_id, ADDRESS, kind="modify_order_address")
    live.fake.queue([ADDRESS, " Shall I go ahead?"],
                    action=proposal(second, ADDRESS, "modify_order_address"))
    await ask(page, "Actually, change the address instead")
    card2 = page.locator(CARD).nth(1)
    await card2.wait_for()
    assert await card2.locator(".action-summary").inner_text() == ADDRESS
    assert await card2.locator("img").count() == 0
    live.fake.queue(["Okay, I haven't changed anything."],
                    action=outcome(second, "declined", ADDRESS, "modify_order_address"))
    await card2.get_by_role("button", name="Confirm").focus()
    await page.keyboard.press("Tab")
    focused = await page.evaluate(f"() => {SHADOW}.activeElement.textContent")
    assert focused == "Keep my order"
    await page.keyboard.press("Space")
    # The pressed button is disabled at once; the keyboard lands on the card's status line.
    await page.wait_for_function(
        f"() => {SHADOW}.activeElement"
        f" && {SHADOW}.activeElement.classList.contains('action-status')")
    await page.locator(f"{W} .items .row.shopper", has_text="Keep my order").wait_for()
    await page.wait_for_function(
        f"() => [...{SHADOW}.querySelectorAll('.action-card .action-status')]"
        ".some(s => s.textContent === 'Nothing was changed')")
    await wait_until(lambda: live.fake.requests[-1].confirm == (second, False))
    assert await card2.get_by_role("button", name="Confirm").is_disabled()

    # 4. A reload replays the cards with their outcomes, still answered.
    await page.reload()
    await page.wait_for_function("() => !!window.StorefrontChat")
    await page.locator(CARD).nth(1).wait_for()
    statuses = await page.locator(f"{CARD} .action-status").all_inner_texts()
    assert statuses == ["Done", "Nothing was changed"]
    assert await page.locator(f"{CARD} button:not([disabled])").count() == 0
    assert live.dialogs == [] and page.errors == []


async def test_enter_key_and_a_refused_confirm(page: Any, live: LiveServer) -> None:
    """Enter on Confirm answers too; a proposal answered elsewhere meanwhile (another tab)
    gets the server's error: the card says so and nothing runs."""
    conv_id = await start_chat(page, live)
    action_id = add_proposal(live, conv_id, CANCEL)
    live.fake.queue([CANCEL, " Shall I go ahead?"], action=proposal(action_id, CANCEL))
    await ask(page, "Cancel #W5442520 please")
    card = page.locator(CARD).last
    await card.wait_for()
    with live.db.transaction() as session:  # answered in another tab
        row = session.scalars(
            select(ActionProposal).where(ActionProposal.public_id == action_id)).one()
        row.status = "executed"
    requests = len(live.fake.requests)
    await card.get_by_role("button", name="Confirm").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_function(
        f"() => {SHADOW}.querySelector('.action-card .action-status').textContent"
        " === 'This was already answered'")
    assert len(live.fake.requests) == requests, "no reply ran"
    assert await page.locator(f"{W} .notice").is_hidden(), "the card says it; no extra notice"
    assert await page.locator(f"{W} .items .row.shopper", has_text="Confirm").count() == 0
    assert live.dialogs == [] and page.errors == []


# ---- the console's approval queue ---------------------------------------------------------

PASSWORD = "correct horse battery"


async def log_in(page: Any, live: LiveServer) -> None:
    await page.goto(live.url + "/console")
    await page.locator("#login-form").wait_for()
    await page.fill("#login-email", "ana@shop.example")
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.locator("#connection.live").wait_for()


async def test_console_approval_queue_reject_by_keyboard_tells_the_shopper(
    browser: Any, live: LiveServer
) -> None:
    from widget_support import new_page

    from chatbot.agents import accounts

    with live.db.transaction() as session:
        accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"], name="Ana")
    console = await new_page(browser, live, viewport={"width": 1440, "height": 900})
    shopper = await new_page(browser, live, viewport={"width": 1100, "height": 800})
    await log_in(console, live)
    await console.locator("#modes-rows select").first.wait_for(state="attached")
    # Not an admin: the modes are shown, not changeable.
    assert await console.locator("#modes-rows select").count() == 8
    assert await console.locator("#modes-rows select:not([disabled])").count() == 0

    # The shopper says yes to an action the store holds for approval.
    conv_id = await start_chat(shopper, live)
    action_id = add_proposal(live, conv_id, CANCEL)
    live.fake.queue([CANCEL, " Shall I go ahead?"], action=proposal(action_id, CANCEL))
    await ask(shopper, "Please cancel order #W5442520")
    card = shopper.locator(CARD).last
    await card.wait_for()
    live.fake.queue(["I've sent this to our team for approval and will let you know here."],
                    pause_at=0,
                    action=outcome(action_id, "awaiting_approval", CANCEL,
                                   reason="A member of our team will review it shortly."))
    await card.get_by_role("button", name="Confirm").click()
    await live.fake.wait_paused()
    with live.db.transaction() as session:  # what the pipeline's execute does in approval mode
        row = session.scalars(
            select(ActionProposal).where(ActionProposal.public_id == action_id)).one()
        row.status = "awaiting_approval"
    live.fake.release()
    await shopper.wait_for_function(
        f"() => {SHADOW}.querySelector('.action-card .action-status').textContent"
        ".startsWith('Waiting for approval')")

    # The console's queue updates by itself.
    item = console.locator(f".approval[data-action-id='{action_id}']")
    await item.wait_for()
    assert await console.locator("#approvals-count").inner_text() == "1"
    assert await item.locator(".summary").inner_text() == CANCEL
    assert "#W5442520" in await item.locator(".tag").inner_text()
    await item.get_by_role("button", name="Open conversation").click()
    proposal_box = console.locator(f"#transcript .proposal[data-action-id='{action_id}']")
    await proposal_box.wait_for()
    await console.locator("#transcript .action-line.awaiting_approval").wait_for()
    panel_row = console.locator(f"#customer-actions [data-action-id='{action_id}']")
    assert "Awaiting approval" in await panel_row.inner_text()
    await shot(console, "console-approval-queue")

    # Reject with the keyboard only: type the reason, Tab past Approve to Reject, Enter.
    await item.locator(".reject-reason").focus()
    await console.keyboard.type("Please call us: this order is a gift.")
    await console.keyboard.press("Tab")
    assert await console.evaluate("document.activeElement.textContent") == "Approve"
    await console.keyboard.press("Tab")
    assert await console.evaluate("document.activeElement.textContent") == "Reject"
    await console.keyboard.press("Enter")
    await console.locator("#approvals-empty").wait_for()
    assert await console.locator("#approvals-count").is_hidden()
    await console.locator("#transcript .action-line.declined").wait_for()
    await console.wait_for_function(
        f"() => document.querySelector(\"#customer-actions [data-action-id='{action_id}']\")"
        ".textContent.includes('Declined')")
    assert "Please call us" in await proposal_box.locator(".action-state").inner_text()

    # The shopper is told: the card's status and a short message.
    await shopper.wait_for_function(
        f"() => {SHADOW}.querySelector('.action-card .action-status').textContent"
        " === 'Nothing was changed: Please call us: this order is a gift.'")
    await shopper.locator(f"{W} .items .row.bot", has_text="did not approve").wait_for()
    await shot(shopper, "widget-action-rejected")
    with live.db.session() as session:
        status = session.scalars(select(ActionProposal.status).where(
            ActionProposal.public_id == action_id)).one()
    assert status == "declined"
    assert live.dialogs == [] and console.errors == [] and shopper.errors == []
    await console.context.close()
    await shopper.context.close()


# ---- the real answering pipeline (no model) on the shipped demo store ----------------------


async def test_widget_card_with_the_real_pipeline_on_a_demo_order(
    browser: Any, tmp_path: Any
) -> None:
    """No fakes but the model: the demo store's real order, the real pipeline (SilentEngine:
    every action turn is code's fixed reply), a signed-in shopper in Chromium."""
    import dataclasses

    from widget_support import new_page

    from chatbot import identity
    from chatbot.answering.pipeline import Pipeline
    from chatbot.evaluation.actions import SilentEngine
    from chatbot.server.app import ChatServer
    from chatbot.settings import Settings
    from chatbot.storage.db import Database
    from chatbot.training.build import load_tokenizer
    from knowledge_base.demo import ensure_demo_store
    from knowledge_base.models import Order
    from knowledge_base.retrieval import Retriever

    base = Settings.from_env()
    if not base.model_path.exists():
        pytest.skip(f"no tokenizer: the model is not pulled ({base.model_path})")
    settings = dataclasses.replace(base, data_dir=tmp_path, port=0,
                                   database_url=f"sqlite:///{tmp_path / 'chat.db'}")
    db = Database(settings.database_url)
    store = ensure_demo_store(db)
    engine = SilentEngine(load_tokenizer(settings.model_path))
    pipeline = Pipeline(db, Retriever(db, settings.index_dir), engine, settings)
    app = ChatServer(settings, db, pipeline)
    port = await app.start(host="127.0.0.1", port=0)
    live = LiveServer(f"http://127.0.0.1:{port}", port, app, db,
                      None, store.identity_secret)  # type: ignore[arg-type]
    page = await new_page(browser, live)
    try:
        token = identity.sign(store.identity_secret, "mei_nelson_9261")
        await page.goto(live.url + "/demo")
        await page.wait_for_function("() => !!window.StorefrontChat")
        await page.evaluate("t => StorefrontChat.setIdentity(t)", token)
        await page.click(f"{W} .launcher")
        await ask(page, "Please cancel order #NW10966, I no longer need it.")
        card = page.locator(CARD).last
        await card.wait_for(timeout=20000)
        summary = await card.locator(".action-summary").inner_text()
        assert summary.startswith("Cancel order #NW10966")
        await card.get_by_role("button", name="Confirm").focus()
        await page.keyboard.press("Enter")
        await page.wait_for_function(
            f"() => {SHADOW}.querySelector('.action-card .action-status').textContent === 'Done'",
            timeout=20000)
        reply = page.locator(f"{W} .items .row.bot", has_text="Order #NW10966 is cancelled")
        await reply.wait_for()
        with db.session() as session:
            status = session.scalars(select(Order.status).where(Order.number == "#NW10966")).one()
        assert status == "cancelled"
        await shot(page, "widget-action-real-pipeline")
        assert live.dialogs == [] and page.errors == []
    finally:
        await page.context.close()
        await app.stop(drain_s=0)
        db.dispose()


@asynccontextmanager
async def pipeline_live(tmp_path: Any) -> AsyncIterator[tuple[LiveServer, Any, str]]:
    """The demo store behind the real ChatServer and Pipeline (no model: SilentEngine),
    with agent Ana: (live server, database, the store's identity secret)."""
    import dataclasses

    from chatbot.agents import accounts
    from chatbot.answering.pipeline import Pipeline
    from chatbot.evaluation.actions import SilentEngine
    from chatbot.server.app import ChatServer
    from chatbot.settings import Settings
    from chatbot.storage.db import Database
    from chatbot.training.build import load_tokenizer
    from knowledge_base.demo import ensure_demo_store
    from knowledge_base.retrieval import Retriever

    base = Settings.from_env()
    if not base.model_path.exists():
        pytest.skip(f"no tokenizer: the model is not pulled ({base.model_path})")
    settings = dataclasses.replace(base, data_dir=tmp_path, port=0,
                                   database_url=f"sqlite:///{tmp_path / 'chat.db'}")
    db = Database(settings.database_url)
    store = ensure_demo_store(db)
    with db.transaction() as session:
        accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"], name="Ana")
    engine = SilentEngine(load_tokenizer(settings.model_path))
    pipeline = Pipeline(db, Retriever(db, settings.index_dir), engine, settings)
    app = ChatServer(settings, db, pipeline)
    port = await app.start(host="127.0.0.1", port=0)
    live = LiveServer(f"http://127.0.0.1:{port}", port, app, db,
                      None, store.identity_secret)  # type: ignore[arg-type]
    try:
        yield live, db, store.identity_secret
    finally:
        await app.stop(drain_s=0)
        db.dispose()


async def signed_in_shopper_waits(shopper: Any, live: LiveServer, customer: str) -> None:
    """A signed-in shopper goes straight to a person: the conversation waits in the inbox."""
    from chatbot import identity

    await shopper.goto(live.url + "/demo")
    await shopper.wait_for_function("() => !!window.StorefrontChat")
    await shopper.evaluate("t => StorefrontChat.setIdentity(t)",
                           identity.sign(live.store_secret, customer))
    await shopper.click(f"{W} .launcher")
    await shopper.get_by_role("button", name="Talk to a person").click()
    await shopper.locator(f"{W} .items .row.system").first.wait_for()


def order_row(db: Any, number: str) -> Any:
    from knowledge_base.models import Order

    with db.session() as session:
        order = session.scalars(select(Order).where(Order.number == number)).one()
        return order.status, [i.variant_source_id for i in order.items]


async def test_console_agent_runs_an_action_for_the_customer(browser: Any, tmp_path: Any) -> None:
    """An agent previews and confirms a cancellation for a signed-in shopper in the console;
    the shopper's widget shows the outcome and the bot's short message (real pipeline, no
    model)."""
    from widget_support import new_page

    async with pipeline_live(tmp_path) as (live, db, _):
        console = await new_page(browser, live, viewport={"width": 1440, "height": 900})
        shopper = await new_page(browser, live)
        try:
            await signed_in_shopper_waits(shopper, live, "mei_nelson_9261")
            await log_in(console, live)
            await console.locator(".inbox-item").first.click()
            await console.locator("#customer-actions").wait_for()
            await console.select_option("#agent-action-kind", "cancel_order")
            await console.select_option("#aa-order", "#NW10966")
            # The demo store takes any reason: a text field, not a list.
            await console.fill("#aa-reason", "no longer needed")
            await console.click("#agent-action-preview")
            summary = console.locator("#agent-action-summary")
            await console.locator("#agent-action-card").wait_for()
            assert (await summary.inner_text()).startswith("Cancel order #NW10966")
            assert order_row(db, "#NW10966")[0] == "pending", "the preview changed nothing"
            await shot(console, "console-agent-action-preview")
            await console.click("#agent-action-confirm")
            await console.locator("#agent-action-status.executed").wait_for()
            await console.locator("#transcript .action-line.executed").wait_for()
            await console.wait_for_function(
                "() => document.querySelector('#customer-actions').textContent.includes('Done')")

            # The shopper sees what was done, without a card (they did not propose it).
            await shopper.wait_for_function(
                f"() => [...{SHADOW}.querySelectorAll('.row.system .action-status')]"
                ".some(s => s.textContent.startsWith('Done'))")
            await shopper.locator(f"{W} .items .row.bot", has_text="is cancelled").wait_for()
            assert order_row(db, "#NW10966")[0] == "cancelled"
            assert console.errors == [] and shopper.errors == [] and live.dialogs == []
        finally:
            await console.context.close()
            await shopper.context.close()


async def test_console_action_form_changes_an_items_option(browser: Any, tmp_path: Any) -> None:
    """The form per kind: the order's lines with the product's available options, the
    saved payment methods, the address filled from the order; keyboard only for the item
    change; the same preview and confirmation as the shopper's."""
    from widget_support import new_page

    async with pipeline_live(tmp_path) as (live, db, _):
        console = await new_page(browser, live, viewport={"width": 1440, "height": 1000})
        shopper = await new_page(browser, live)
        try:
            await signed_in_shopper_waits(shopper, live, "mia_patel_8497")
            await log_in(console, live)
            await console.locator(".inbox-item").first.click()
            await console.locator("#customer-actions").wait_for()

            # The address form starts from the order's shipping address.
            await console.select_option("#agent-action-kind", "modify_order_address")
            await console.select_option("#aa-order", "#NW10967")
            assert await console.input_value("#aa-city") != ""
            assert await console.locator("label[for=aa-zip]").inner_text() == "Zip code"

            await console.select_option("#agent-action-kind", "modify_order_items")
            await console.select_option("#aa-order", "#NW10967")
            lines = console.locator("#agent-action-fields .line")
            assert await lines.count() == 2
            assert "Summit Insulated Ski Gloves (Black, M)" in await lines.nth(0).inner_text()
            # Nothing chosen: said in the form, nothing sent.
            await console.click("#agent-action-preview")
            error = console.locator("#agent-action-error")
            await error.wait_for()
            assert await error.inner_text() == "Choose at least one item."
            assert await console.locator("#agent-action-card").is_hidden()

            # Keyboard: tick the gloves, pick size L, the card to pay any difference.
            await console.focus("#aa-item-0")
            await console.keyboard.press("Space")
            assert await console.is_enabled("#aa-variant-0")
            assert await console.is_disabled("#aa-variant-1"), "only ticked lines change"
            options = await console.locator("#aa-variant-0 option").all_inner_texts()
            assert options[0] == "Black, M · $79.00 (as now)" and "Black, L · $79.00" in options
            await console.select_option("#aa-variant-0", "NW-SIG-BLA-L")
            payments = await console.locator("#aa-payment option").all_inner_texts()
            assert payments[0] == "Mastercard ending in 7414 (original)"
            await console.focus("#agent-action-preview")
            await console.keyboard.press("Enter")
            card = console.locator("#agent-action-card")
            await card.wait_for()
            summary = await console.locator("#agent-action-summary").inner_text()
            assert summary.startswith("Change items in order #NW10967"), summary
            assert await error.is_hidden(), "the earlier message went"
            assert order_row(db, "#NW10967") == ("pending", ["NW-SIG-BLA-M", "NW-KCD-NAV-S"])
            await console.screenshot(path=str(tmp_path / "console-action-form.png"))

            await console.keyboard.press("Enter")  # Confirm has the focus
            await console.locator("#agent-action-status.executed").wait_for()
            assert order_row(db, "#NW10967")[1] == ["NW-SIG-BLA-L", "NW-KCD-NAV-S"]
            await shopper.locator(f"{W} .items .row.bot", has_text="are changed").wait_for()
            assert console.errors == [] and shopper.errors == []
            assert live.dialogs == []
        finally:
            await console.context.close()
            await shopper.context.close()
