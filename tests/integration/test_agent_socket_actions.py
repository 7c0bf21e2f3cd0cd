"""The console's side of order actions (issue #19) over the real /ws/agent socket.

The approval queue follows the store live, a rejection tells the shopper (an ``action``
event and a short bot message), modes are for admins, the customer panel lists the
conversation's actions, and an agent's own action goes through the same policy checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import select, update

from chatbot import identity
from chatbot.actions.models import ActionProposal
from chatbot.actions.service import audit_log
from chatbot.server.app import ChatServer
from chatbot.settings import Settings
from chatbot.storage.db import Database
from knowledge_base.demo import ensure_demo_store
from knowledge_base.models import Order
from tests.fakes import FakeAnswerer
from tests.integration.agent_support import add_agent, agent_client, token_for
from tests.integration.server_support import Running, running_server
from tests.integration.test_server_actions import SUMMARY, add_proposal, outcome, wire


@pytest.fixture
async def srv(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"], name="Ana")
        add_agent(running.db, "root@shop.example", [], admin=True, name="Root")
        yield running


def set_status(srv: Running, action_id: str, status: str) -> None:
    with srv.db.transaction() as session:
        session.execute(update(ActionProposal).where(ActionProposal.public_id == action_id)
                        .values(status=status))


async def test_queue_follows_the_store_and_a_rejection_tells_the_shopper(srv: Running) -> None:
    token = token_for(srv.db, "ana@shop.example")
    async with agent_client(srv, token) as agent, srv.client() as shopper:
        await agent.send(type="subscribe_inbox", store="demo")
        await agent.until("inbox")
        await agent.send(type="list_actions", store="demo")
        first = (await agent.until("actions"))[-1]
        assert first["pending"] == [] and first["can_configure"] is False
        assert first["modes"]["cancel_order"] == "auto"
        assert first["modes"]["remove_order_items"] == "off"

        # The shopper says yes to a kind in approval mode: the queue updates by itself.
        welcome = await shopper.hello()
        conv_id = welcome["conversation_id"]
        await shopper.ask("hello")
        action_id = add_proposal(srv, conv_id)
        srv.fake.queue(["Shall I?"], action=wire(action_id))
        await shopper.ask("cancel my order")
        srv.fake.queue(["I've sent this to our team for approval."], pause_at=0,
                       action=outcome(action_id, "awaiting_approval",
                                      "A member of our team will review it shortly."))
        await shopper.send(type="confirm", action_id=action_id, accept=True)
        await srv.fake.wait_paused()
        set_status(srv, action_id, "awaiting_approval")  # what the pipeline's execute does
        srv.fake.release()
        await shopper.until("done")
        queued = (await agent.until(lambda f: f["type"] == "actions" and f["pending"]))[-1]
        (row,) = queued["pending"]
        assert (row["id"], row["summary"], row["conversation_id"], row["order"]) == (
            action_id, SUMMARY, conv_id, "#W5442520")

        # Open it: the transcript has the card and the outcome; the panel lists the action.
        await agent.send(type="open", conversation_id=conv_id)
        opened = (await agent.until("conversation"))[-1]
        assert any(e["type"] == "done" and e.get("action", {}).get("id") == action_id
                   for e in opened["events"])
        assert any(e["type"] == "action" and e["status"] == "awaiting_approval"
                   for e in opened["events"])
        assert [(a["id"], a["status"]) for a in opened["customer"]["actions"]] == [
            (action_id, "awaiting_approval")]

        # Reject with a reason: the shopper hears it, the queue empties.
        await agent.send(type="reject_action", store="demo", action_id=action_id,
                         reason="Please call us: this order is a gift.")
        frames = await shopper.until("done")
        event = next(f for f in frames if f["type"] == "action")
        assert (event["status"], event["reason"]) == (
            "declined", "Please call us: this order is a gift.")
        assert frames[-1]["text"].startswith("Our team did not approve your request")
        after = (await agent.until(lambda f: f["type"] == "actions" and not f["pending"]))[-1]
        assert after["pending"] == []
        if not any(f["type"] == "event" and "did not approve" in f["event"].get("text", "")
                   for f in agent.frames):
            await agent.until(lambda f: f["type"] == "event" and f["event"]["type"] == "done")
        live = [f["event"] for f in agent.frames
                if f["type"] == "event" and f["event"]["type"] == "action"]
        assert [e["status"] for e in live] == ["declined"]

        # Answered already / unknown: errors, nothing changes.
        await agent.send(type="approve_action", store="demo", action_id=action_id)
        assert (await agent.error())["code"] == "action_used"
        await agent.send(type="reject_action", store="demo", action_id="act_forged")
        assert (await agent.error())["code"] == "unknown_action"


async def test_modes_are_for_admins_and_stores_are_checked(srv: Running) -> None:
    async with agent_client(srv, token_for(srv.db, "ana@shop.example")) as ana:
        await ana.send(type="set_action_modes", store="demo", modes={"cancel_order": "approval"})
        assert (await ana.error())["code"] == "forbidden"
        await ana.send(type="list_actions", store="locked")
        assert (await ana.error())["code"] == "forbidden"
        await ana.send(type="set_action_modes", store="demo", modes={"cancel_order": "maybe"})
        assert (await ana.error())["code"] == "bad_message"
    async with agent_client(srv, token_for(srv.db, "root@shop.example")) as root:
        await root.send(type="set_action_modes", store="demo",
                        modes={"cancel_order": "approval", "return_items": "off"})
        got = (await root.until("actions"))[-1]
        assert got["can_configure"] is True
        assert (got["modes"]["cancel_order"], got["modes"]["return_items"]) == ("approval", "off")
        await root.send(type="set_action_modes", store="demo", modes={"fly_to_moon": "auto"})
        assert (await root.error())["code"] != "internal_error"


async def test_an_agents_own_action_goes_through_the_policy(srv: Running) -> None:
    async with srv.client() as shopper:
        welcome = await shopper.hello()
        await shopper.ask("hello")
    async with agent_client(srv, token_for(srv.db, "ana@shop.example")) as ana:
        await ana.send(type="propose_action", conversation_id=welcome["conversation_id"],
                       kind="cancel_order",
                       params={"order": "#W0000000", "reason": "no longer needed"})
        err = await ana.error()
        assert err["code"] in ("not_verified", "order_not_found")
        assert err["ref"] == "propose_action"
        await ana.send(type="confirm_action", conversation_id=welcome["conversation_id"],
                       action_id="act_forged", accept=True)
        assert (await ana.error())["code"] == "unknown_action"


# ---- on the shipped demo store, with real orders ----------------------------------------------


@asynccontextmanager
async def demo_server(tmp_path: Path) -> AsyncIterator[Running]:
    settings = Settings.from_env({"CHATBOT_HOME": str(tmp_path)},
                                 database_url=f"sqlite:///{tmp_path / 'chat.db'}")
    db = Database(settings.database_url)
    store = ensure_demo_store(db)
    fake = FakeAnswerer()
    app = ChatServer(settings, db, fake, flush_interval_s=0.005, reply_grace_s=0.5)
    port = await app.start(host="127.0.0.1", port=0)
    try:
        yield Running(app, port, fake, db, {"demo": store.identity_secret}, {})
    finally:
        await app.stop(drain_s=0)
        db.dispose()


async def test_an_agent_runs_an_action_for_the_customer_then_another_approves_it(
    tmp_path: Path,
) -> None:
    async with demo_server(tmp_path) as srv:
        add_agent(srv.db, "ana@shop.example", ["demo"], name="Ana")
        add_agent(srv.db, "root@shop.example", [], admin=True, name="Root")
        token = identity.sign(srv.secrets["demo"], "mei_nelson_9261")
        async with srv.client() as shopper, \
                agent_client(srv, token_for(srv.db, "ana@shop.example")) as ana, \
                agent_client(srv, token_for(srv.db, "root@shop.example")) as root:
            welcome = await shopper.hello(identity=token)
            assert welcome["customer"]["verified"] is True
            conv_id = welcome["conversation_id"]
            await shopper.ask("I want to cancel my order")
            # The store holds cancellations for an agent's approval.
            await root.send(type="set_action_modes", store="demo",
                            modes={"cancel_order": "approval"})
            assert (await root.until("actions"))[-1]["modes"]["cancel_order"] == "approval"
            await root.send(type="subscribe_inbox", store="demo")
            await root.until("inbox")

            # Ana previews the cancellation: the same summary the bot would show.
            await ana.send(type="propose_action", conversation_id=conv_id, kind="cancel_order",
                           params={"order": "#NW10966", "reason": "no longer needed"})
            preview = (await ana.until("action_preview"))[-1]["action"]
            assert preview["status"] == "proposed"
            assert preview["summary"].startswith(
                "Cancel order #NW10966 (reason: no longer needed).")
            await ana.send(type="confirm_action", conversation_id=conv_id,
                           action_id=preview["id"], accept=True)
            held = (await ana.until("action_preview"))[-1]["action"]
            assert held["status"] == "awaiting_approval"
            assert order_status(srv.db, "#NW10966") == "pending"

            # Root sees it in the queue and approves: checked again, executed, shopper told.
            queued = (await root.until(lambda f: f["type"] == "actions" and f["pending"]))[-1]
            assert [row["id"] for row in queued["pending"]] == [preview["id"]]
            await root.send(type="approve_action", store="demo", action_id=preview["id"])
            frames = await shopper.until(
                lambda f: f["type"] == "done" and "approved" in f["text"])
            event = next(f for f in frames if f["type"] == "action" and f["status"] == "executed")
            assert event["id"] == preview["id"]
            assert frames[-1]["text"].startswith("Our team approved your request. Done. "
                                                 "Order #NW10966 is cancelled.")
            assert order_status(srv.db, "#NW10966") == "cancelled"
            await root.until(lambda f: f["type"] == "actions" and not f["pending"])
        log = audit_log(srv.db, 1, action_id=preview["id"])
        assert [(r["actor"], r["actor_id"], r["event"]) for r in log][-3:] == [
            ("agent", "ana@shop.example", "proposed"),
            ("agent", "ana@shop.example", "awaiting_approval"),
            ("agent", "root@shop.example", "executed"),
        ]


def order_status(db: Database, number: str) -> str:
    with db.session() as session:
        return str(session.scalars(select(Order.status).where(Order.number == number)).one())


async def test_the_customer_panel_carries_what_the_action_form_offers(tmp_path: Path) -> None:
    async with demo_server(tmp_path) as srv:
        add_agent(srv.db, "ana@shop.example", ["demo"], name="Ana")
        async with srv.client() as shopper, \
                agent_client(srv, token_for(srv.db, "ana@shop.example")) as ana:
            welcome = await shopper.hello(
                identity=identity.sign(srv.secrets["demo"], "mia_patel_8497"))
            await shopper.ask("hello")
            await ana.send(type="open", conversation_id=welcome["conversation_id"])
            form = (await ana.until("conversation"))[-1]["customer"]["action_form"]
        assert form["reasons"] is None  # the demo store takes any reason
        assert form["kinds"]["remove_order_items"] == "auto" and form["signed_in"] is True
        assert [m["id"] for m in form["payment_methods"]] == [
            "card_mastercard_7414", "card_visa_8511", "card_mastercard_7113"]
        assert form["payment_methods"][1]["label"] == "Visa ending in 8511"
        order = next(o for o in form["orders"] if o["number"] == "#NW10967")
        # The payment row says "Mastercard ending in 7414": the saved method it names.
        assert (order["status"], order["payment_method"], order["paid_with"]) == (
            "pending", "card_mastercard_7414", [])
        gloves = order["items"][0]
        assert (gloves["item_id"], gloves["name"], gloves["quantity"]) == (
            "NW-SIG-BLA-M", "Summit Insulated Ski Gloves", 1)
        assert [v["item_id"] for v in gloves["variants"]] == [
            "NW-SIG-BLA-M", "NW-SIG-BLA-S", "NW-SIG-BLA-L", "NW-SIG-BLA-XL"]
        assert gloves["variants"][0]["current"] is True
        assert order["address"]["city"] and set(order["address"]) == {
            "address1", "address2", "city", "state", "zip", "country"}
        # A guest who proved nothing is offered nothing to act on.
        async with srv.client() as guest, \
                agent_client(srv, token_for(srv.db, "ana@shop.example")) as ana:
            other = await guest.hello()
            await guest.ask("hello")
            await ana.send(type="open", conversation_id=other["conversation_id"])
            empty = (await ana.until("conversation"))[-1]["customer"]["action_form"]
        assert empty["orders"] == [] and empty["payment_methods"] == []
        assert empty["signed_in"] is False
        # Once the bot identified the shopper (the store's identify_by, kept in the
        # dialogue state), the agent acts for that customer.
        from chatbot.conversations.models import Conversation
        from knowledge_base.models import Customer

        with srv.db.transaction() as session:
            mia = session.scalars(select(Customer.id)
                                  .where(Customer.source_id == "mia_patel_8497")).one()
            session.execute(update(Conversation)
                            .where(Conversation.public_id == other["conversation_id"])
                            .values(dialogue={"customer_id": mia}))
        async with agent_client(srv, token_for(srv.db, "ana@shop.example")) as ana:
            await ana.send(type="open", conversation_id=other["conversation_id"])
            known = (await ana.until("conversation"))[-1]["customer"]["action_form"]
            assert known["signed_in"] is True and "#NW10967" in [
                o["number"] for o in known["orders"]]
            await ana.send(type="propose_action", conversation_id=other["conversation_id"],
                           kind="cancel_order",
                           params={"order": "#NW10967", "reason": "ordered by mistake"})
            preview = (await ana.until("action_preview"))[-1]["action"]
        assert preview["summary"].startswith("Cancel order #NW10967")
