"""Console inbox rows, counts, search, unread marks, handoff summaries and customer panel."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from functools import partial

import pytest

from chatbot.agents import accounts, inbox
from chatbot.answering.router import route
from chatbot.conversations import ownership
from chatbot.conversations.hub import ConversationHub
from chatbot.conversations.service import ConversationService
from chatbot.storage.db import Database
from chatbot.types import Source
from knowledge_base.models import Customer, Order, OrderItem, Shipment
from knowledge_base.stores import get_or_create_store

PASSWORD = "correct horse battery"
# The inbox labels topics with the router the server hands in.
inbox_rows = partial(inbox.inbox_rows, classify=route)
inbox_row = partial(inbox.inbox_row, classify=route)


@pytest.fixture()
def db(tmp_path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'inbox.db'}")
    yield database
    database.dispose()


@pytest.fixture()
def world(db: Database) -> dict[str, int]:
    with db.transaction() as s:
        store = get_or_create_store(s, "demo")
        other = get_or_create_store(s, "other")
        customer = Customer(store_id=store.id, source_id="mia_lee_1", email="mia@example.com",
                            first_name="Mia", last_name="Lee")
        s.add(customer)
        s.flush()
        order = Order(store_id=store.id, customer_id=customer.id, number="#W2611340",
                      status="shipped", total=Decimal("59.90"), placed_at=datetime(2026, 11, 2))
        order.items = [OrderItem(name="Trail Runner", quantity=1, unit_price=Decimal("59.90"),
                                 options={"size": "42"})]
        order.shipments = [Shipment(carrier="UPS", tracking_number="1Z999", status="in_transit")]
        s.add(order)
        ana = accounts.add_agent(s, "ana@shop.example", PASSWORD, stores=["demo"])
        bob = accounts.add_agent(s, "bob@shop.example", PASSWORD, stores=["demo"])
        return {"store": store.id, "other": other.id, "customer": customer.id, "ana": ana.id,
                "bob": bob.id}


async def test_inbox_rows_counts_search_unread_and_summary(
    db: Database, world: dict[str, int]
) -> None:
    service = ConversationService(db, ConversationHub())
    verified, _ = await service.open(world["store"], world["customer"])
    guest, _ = await service.open(world["store"], None)
    elsewhere, _ = await service.open(world["other"], None)

    ack, _ = await service.add_shopper_message(verified, "m1", "Where is my order #W2611340?")
    assert await service.begin_reply(verified, ack.seq, "r1", "m1") is not None
    await service.append_tokens(verified, "r1", ["It ", "shipped."])
    await service.finish_reply(verified, "r1", text="It shipped.", in_reply_to="m1",
                               sources=[Source("order", "#W2611340", "Order #W2611340")])
    await service.add_shopper_message(verified, "m2", "I want to talk to a human please")
    await service.transition(verified, ownership.Action.REQUEST_HANDOFF,
                             reason="I want to talk to a human please")
    await service.add_shopper_message(guest, "g1", "Do you sell rain jackets?")
    await service.add_shopper_message(elsewhere, "e1", "other store's secret")

    rows = await service.run(inbox_rows, world["store"], world["ana"])
    assert {r["conversation_id"] for r in rows} == {verified.public_id, guest.public_id}
    row = next(r for r in rows if r["conversation_id"] == verified.public_id)
    assert row["state"] == "waiting"
    assert row["customer"] == {"verified": True, "name": "Mia Lee", "email": "mia@example.com",
                               "id": "mia_lee_1"}
    assert row["unread"] == 2
    assert row["last_message"]["role"] == "shopper"
    assert row["last_message"]["text"] == "I want to talk to a human please"
    assert row["waiting_since"] is not None
    summary = row["summary"]
    assert summary["orders"] == ["#W2611340"]
    assert summary["topic"].startswith("Order")
    assert "I want to talk to a human please" in summary["text"]

    # The copilot answers the question, not the request for a person that followed it.
    target = await service.run(inbox.copilot_input, verified.id, route)
    assert target is not None and target.text == "Where is my order #W2611340?"
    assert target.history == []
    other = await service.run(inbox.copilot_input, elsewhere.id, route)
    assert other is not None and (other.text, other.seq) == ("other store's secret", 1)

    counts = await service.run(inbox.inbox_counts, world["store"], world["ana"])
    assert counts == {"bot": 1, "waiting": 1, "agent": 0, "resolved": 0, "open": 2, "all": 2,
                      "mine": 0}

    # Filters and search (customer name, message text, order number; never another store).
    waiting = await service.run(inbox_rows, world["store"], world["ana"], filter="waiting")
    assert [r["conversation_id"] for r in waiting] == [verified.public_id]
    for q, expected in [("mia", [verified.public_id]), ("rain jack", [guest.public_id]),
                        ("W2611340", [verified.public_id]), ("secret", []), ("100%", [])]:
        found = await service.run(inbox_rows, world["store"], world["ana"], filter="all",
                                  q=q)
        assert [r["conversation_id"] for r in found] == expected, q

    # Reading clears unread for this agent only.
    await service.run(inbox.mark_read, world["ana"], verified.id)
    await service.run(inbox.mark_read, world["ana"], verified.id)  # idempotent
    row, matches = await service.run(inbox_row, verified.id, world["ana"], filter="open",
                                     q="")
    assert matches and row["unread"] == 0
    bob_row, _ = await service.run(inbox_row, verified.id, world["bob"], filter="open", q="")
    assert bob_row["unread"] == 2

    # Ana takes over: "mine" for her, not for Bob; a row leaving a filter says so.
    await service.transition(verified, ownership.Action.TAKE_OVER, agent_id=world["ana"],
                             agent_name="Ana")
    row, matches = await service.run(inbox_row, verified.id, world["ana"], filter="mine",
                                     q="")
    assert matches and row["mine"] and row["owner"] == {"id": world["ana"], "name": "Ana"}
    _, matches = await service.run(inbox_row, verified.id, world["bob"], filter="mine", q="")
    assert not matches
    _, matches = await service.run(inbox_row, verified.id, world["ana"], filter="waiting",
                                   q="")
    assert not matches


async def test_customer_panel_verified_and_guest(db: Database, world: dict[str, int]) -> None:
    service = ConversationService(db, ConversationHub())
    verified, _ = await service.open(world["store"], world["customer"])
    details = await service.run(inbox.conversation_details, verified.id, route)
    panel = details["customer"]
    assert panel["verified"] and panel["name"] == "Mia Lee"
    assert [o["number"] for o in panel["orders"]] == ["#W2611340"]
    order = panel["orders"][0]
    assert order["total_display"] == "$59.90"
    assert order["tracking"] == "UPS · 1Z999 · in transit"
    assert "Trail Runner" in order["items"][0]
    assert details["summary"] is None

    guest, _ = await service.open(world["store"], None)
    panel = (await service.run(inbox.conversation_details, guest.id, route))["customer"]
    assert not panel["verified"] and panel["orders"] == []
    await service.add_verified_orders(guest, frozenset({"#W2611340"}), "bot")
    panel = (await service.run(inbox.conversation_details, guest.id, route))["customer"]
    assert panel["verified_orders"] == ["#W2611340"]
    assert [o["number"] for o in panel["orders"]] == ["#W2611340"]
