"""The real pipeline end to end: real engine (base model), real MiniLM retriever, SQLite store."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from chatbot.answering.facts import order_fact
from chatbot.answering.guard import find_unsupported
from chatbot.answering.pipeline import Pipeline, build_answerer, collect
from chatbot.settings import Settings
from chatbot.storage.db import Database
from chatbot.types import AnswerRequest
from knowledge_base.models import Article, Customer, Order, OrderItem, Shipment
from knowledge_base.orders import customer_orders
from knowledge_base.stores import get_or_create_store

MODEL_PATH = Settings.from_env().model_path

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        not (MODEL_PATH / "config.json").exists(), reason=f"model not pulled at {MODEL_PATH}"
    ),
]


@pytest.fixture()
def store(tmp_path: Path) -> tuple[Database, Settings, int, int]:
    db = Database(f"sqlite:///{tmp_path / 'chatbot.db'}")
    with db.transaction() as s:
        shop = get_or_create_store(s, "shop")
        ana = Customer(store_id=shop.id, source_id="ana_1", email="ana@example.com")
        order = Order(store_id=shop.id, customer=ana, number="#W1000001", status="processed")
        order.total = Decimal("536.65")
        order.items += [
            OrderItem(name="Water Bottle", options={"color": "blue"}, unit_price=Decimal("47.84")),
            OrderItem(
                name="Office Chair", options={"color": "black"}, unit_price=Decimal("488.81")
            ),
        ]
        order.shipments.append(Shipment(tracking_number="357962501027", status="in_transit"))
        s.add_all([ana, order])
        s.add(
            Article(
                store_id=shop.id,
                source_id="return-window",
                kind="policy",
                title="How long do I have to return something?",
                body="You have 30 days from the delivery date to start a return. Refunds go "
                "to the original payment method within 5 business days of receiving the item.",
            )
        )
        s.flush()
        ids = (shop.id, ana.id)
    settings = Settings.from_env({}, data_dir=tmp_path, model_path=MODEL_PATH, adapter_path="none")
    settings = dataclasses.replace(settings, max_new_tokens=48)
    return db, settings, *ids


@pytest.fixture()
async def pipeline(store: tuple[Database, Settings, int, int]) -> AsyncIterator[Pipeline]:
    db, settings, _, _ = store
    answerer = build_answerer(settings, db)
    await answerer.start()
    yield answerer
    await answerer.close()


async def test_order_reply_is_grounded_deterministic_and_cited(
    pipeline: Pipeline, store: tuple[Database, Settings, int, int]
) -> None:
    db, _, shop, ana = store
    request = AnswerRequest(shop, "What's the tracking number of #W1000001?", customer_id=ana)
    first = await collect(pipeline.answer(request))
    second = await collect(pipeline.answer(request))
    assert first.text == second.text  # greedy decoding: same question, same reply
    with db.sessions() as s:
        fact = order_fact(customer_orders(s, shop, ana)[0], ("tracking",))
    assert find_unsupported(first.text, [fact.line()]) == []
    assert [s.id for s in first.sources] == ["#W1000001"]


async def test_policy_reply_cites_the_retrieved_article(
    pipeline: Pipeline, store: tuple[Database, Settings, int, int]
) -> None:
    _, _, shop, _ = store
    done = await collect(
        pipeline.answer(AnswerRequest(shop, "How many days do I have to return something?"))
    )
    assert done.reason == "grounded"
    assert [s.id for s in done.sources] == ["return-window"]
    assert find_unsupported(done.text, ["30 days 5 business days"]) == []


async def test_unrelated_question_hands_off_without_generating(
    pipeline: Pipeline, store: tuple[Database, Settings, int, int]
) -> None:
    _, _, shop, _ = store
    done = await collect(pipeline.answer(AnswerRequest(shop, "Do you repair bicycles?")))
    assert done.handoff and done.reason == "no_match"
    assert pipeline.stats.generated == 0
