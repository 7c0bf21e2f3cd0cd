"""``chatbot ask`` as a shopper runs it: a real process, a real SQLite store, the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from chatbot.answering import replies
from chatbot.settings import Settings
from chatbot.storage.db import Database
from knowledge_base.models import Article, Customer, Order, OrderItem, Shipment
from knowledge_base.stores import get_or_create_store

MODEL_PATH = Settings.from_env().model_path
needs_model = pytest.mark.skipif(
    not (MODEL_PATH / "config.json").exists(), reason=f"model not pulled at {MODEL_PATH}"
)


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """A data dir with a small store: one customer, one shipped order, one article."""
    db = Database(f"sqlite:///{tmp_path / 'chatbot.db'}")
    with db.transaction() as s:
        shop = get_or_create_store(s, "shop")
        ana = Customer(store_id=shop.id, source_id="ana_1", email="ana@example.com")
        order = Order(store_id=shop.id, customer=ana, number="#W1000001", status="shipped")
        order.total = Decimal("47.84")
        order.items.append(OrderItem(name="Water Bottle", unit_price=Decimal("47.84")))
        order.shipments.append(
            Shipment(carrier="UPS", tracking_number="357962501027", status="in_transit")
        )
        s.add_all([ana, order])
        s.add(
            Article(
                store_id=shop.id,
                source_id="shipping-time",
                kind="faq",
                title="How long does shipping take?",
                body="Standard shipping takes 3 to 5 business days within the US.",
            )
        )
    db.dispose()
    return tmp_path


def run_ask(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env.update(CHATBOT_HOME=str(home), CHATBOT_MODEL=str(MODEL_PATH), CHATBOT_LOG_LEVEL="WARNING")
    return subprocess.run(
        [sys.executable, "-m", "chatbot", "ask", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def test_unknown_store_is_a_clear_error(home: Path) -> None:
    result = run_ask(home, "--store", "nosuch", "hello")
    assert result.returncode == 1
    assert "unknown store 'nosuch'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_customer_is_a_clear_error(home: Path) -> None:
    result = run_ask(home, "--store", "shop", "--customer", "zed_9", "where is my order?")
    assert result.returncode == 1
    assert "no customer 'zed_9'" in result.stderr


def test_empty_question_is_a_usage_error(home: Path) -> None:
    result = run_ask(home, "--store", "shop", "   ")
    assert result.returncode == 2
    assert "the question is empty" in result.stderr


@pytest.mark.model
@needs_model
def test_customer_order_question_streams_reply_and_sources(home: Path) -> None:
    result = run_ask(
        home, "--store", "shop", "--customer", "ana_1", "what's the tracking number of #W1000001?"
    )
    assert result.returncode == 0, result.stderr
    reply, _, sources = result.stdout.partition("Sources:")
    assert reply.strip()
    assert "[order #W1000001] Order #W1000001" in sources


@pytest.mark.model
@needs_model
def test_json_output_for_guest_asks_to_verify(home: Path) -> None:
    result = run_ask(home, "--store", "shop", "--json", "where is my package?")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["reply"] == replies.VERIFY_REQUEST
    assert answer["reason"] == "verify_needed" and answer["sources"] == []


@pytest.mark.model
@needs_model
def test_guest_verifies_and_gets_only_grounded_numbers(home: Path) -> None:
    result = run_ask(
        home,
        "--store",
        "shop",
        "--json",
        "--no-adapter",
        "where is #W1000001? my email is ana@example.com",
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["verified_orders"] == ["#W1000001"]
    assert answer["reason"] == "grounded"
    assert [s["id"] for s in answer["sources"]] == ["#W1000001"]
    # Every digit run the shopper sees comes from the order's facts.
    from chatbot.answering.guard import find_unsupported

    facts = ["[order #W1000001] status: shipped; Water Bottle x1 $47.84; tracking 357962501027"]
    assert find_unsupported(answer["reply"], facts) == []


@pytest.mark.model
@pytest.mark.slow
@needs_model
def test_fresh_home_creates_the_demo_store(tmp_path: Path) -> None:
    result = run_ask(tmp_path, "--json", "can I talk to a person?")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["reply"] == replies.HANDOFF and answer["handoff"] is True
