"""Order actions on the shipped demo store (Northwind Outfitters): its FAQ promises that the
chat assistant can change the address, items or payment of a pending order, cancel it, and
start returns; its payment rows name methods ("Visa ending in 4242"), not ids."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from chatbot.actions.kinds import ActionRefused
from chatbot.actions.service import ActionService
from chatbot.storage.db import Database
from knowledge_base.demo import ensure_demo_store
from knowledge_base.models import Customer, Order


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, int]]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.sqlite'}")
    store = ensure_demo_store(db)
    yield db, store.id
    db.dispose()


def customer_id(db: Database, ref: str) -> int:
    with db.session() as s:
        cid = s.scalar(select(Customer.id).where(Customer.source_id == ref))
        assert cid is not None
        return cid


def order(db: Database, number: str) -> Order:
    with db.session() as s:
        row = s.scalars(select(Order).where(Order.number == number)).one()
        _ = (row.payments, row.returns, row.items, row.customer)
        if row.customer is not None:
            _ = row.customer.payment_methods
        return row


def test_cancel_refunds_a_named_gift_card_and_credits_its_balance(demo) -> None:  # type: ignore[no-untyped-def]
    db, store_id = demo
    service = ActionService(db)
    p = service.propose(store_id, "cancel_order",
                        {"order": "#NW10966", "reason": "no longer needed"},
                        customer_id=customer_id(db, "mei_nelson_9261"))
    assert p.summary == ("Cancel order #NW10966 (reason: no longer needed). $50.95 will be "
                         "refunded to your gift card ending in 9348 right away.")
    assert service.execute(p.id, store_id=store_id).status == "executed"
    row = order(db, "#NW10966")
    assert row.status == "cancelled"
    assert [(x.kind, float(x.amount), x.method) for x in row.payments][-1] == (
        "refund", 50.95, "Gift card ending in 9348")
    card = next(m for m in row.customer.payment_methods if m["id"] == "gift_card_9348")
    assert card["balance"] == pytest.approx(74.65 + 50.95)


def test_change_payment_then_address_of_a_pending_order(demo) -> None:  # type: ignore[no-untyped-def]
    db, store_id = demo
    service = ActionService(db)
    mia = customer_id(db, "mia_patel_8497")
    p = service.propose(store_id, "modify_order_payment",
                        {"order": "#NW10967", "payment_method": "card_visa_8511"}, customer_id=mia)
    assert "with your Visa ending in 8511 instead of your Mastercard ending in 7414" in p.summary
    assert service.execute(p.id, store_id=store_id).status == "executed"
    rows = [(x.kind, float(x.amount), x.method) for x in order(db, "#NW10967").payments]
    assert rows[-2:] == [("payment", 198.0, "Visa ending in 8511"),
                         ("refund", 198.0, "Mastercard ending in 7414")]
    address = {"address1": "1 Harbor Way", "address2": "", "city": "Seattle", "state": "WA",
               "country": "USA", "zip": "98101"}
    p = service.propose(store_id, "modify_order_address",
                        {"order": "#NW10967", "address": address}, customer_id=mia)
    assert p.summary.startswith("Ship order #NW10967 to 1 Harbor Way, Seattle, WA 98101, USA")
    assert service.execute(p.id, store_id=store_id).status == "executed"
    assert order(db, "#NW10967").shipping_address == address
    # The FAQ: "Can I cancel just one item?" Yes, while pending; the refund goes to the
    # method that now pays for the order, when the rest ships.
    p = service.propose(store_id, "remove_order_items",
                        {"order": "#NW10967", "items": ["NW-SIG-BLA-M"]}, customer_id=mia)
    assert p.summary == ("Remove from order #NW10967: Summit Insulated Ski Gloves (Black, M) "
                         "$79.00. $79.00 will be refunded to your Visa ending in 8511 when the "
                         "rest of the order ships.")
    assert service.execute(p.id, store_id=store_id).status == "executed"
    row = order(db, "#NW10967")
    assert [(i.variant_source_id, i.quantity) for i in row.items] == [("NW-KCD-NAV-S", 1)]
    assert (float(row.subtotal), float(row.total), row.status) == (119.0, 119.0, "pending")
    assert [(x.kind, float(x.amount), x.method) for x in row.payments][-1] == (
        "refund", 79.0, "Visa ending in 8511")
    with pytest.raises(ActionRefused) as last_item:
        service.propose(store_id, "remove_order_items",
                        {"order": "#NW10967", "items": ["NW-KCD-NAV-S"]}, customer_id=mia)
    assert last_item.value.code == "would_empty_order"
    assert "cancel the whole order instead" in last_item.value.alternatives


def test_the_30_day_return_window_and_a_required_reason(demo) -> None:  # type: ignore[no-untyped-def]
    db, store_id = demo
    service = ActionService(db)
    with pytest.raises(ActionRefused) as too_late:  # delivered a year before the demo's today
        service.propose(store_id, "return_items",
                        {"order": "#NW10002", "items": ["NW-BSP-REG"],
                         "payment_method": "apple_pay"},
                        customer_id=customer_id(db, "leo_patel_5412"))
    assert too_late.value.code == "outside_window"
    with pytest.raises(ActionRefused) as no_reason:
        service.propose(store_id, "cancel_order", {"order": "#NW10967", "reason": ""},
                        customer_id=customer_id(db, "mia_patel_8497"))
    assert no_reason.value.code == "bad_params"  # a reason is still required


def test_return_a_delivered_item_to_the_original_method(demo) -> None:  # type: ignore[no-untyped-def]
    db, store_id = demo
    service = ActionService(db)
    p = service.propose(store_id, "return_items",
                        {"order": "#NW10694", "items": ["NW-CBF-NC"],
                         "payment_method": "Gift card ending in 4260"},
                        customer_id=customer_id(db, "elizabeth_fischer_1684"))
    assert "will be refunded to your gift card ending in 4260 once the items are received" \
        in p.summary
    assert service.execute(p.id, store_id=store_id).status == "executed"
    row = order(db, "#NW10694")
    assert row.status == "return requested"
    ret = row.returns[-1]
    assert (ret.kind, ret.item_ids, ret.payment_method) == (
        "return", ["NW-CBF-NC"], "Gift card ending in 4260")
