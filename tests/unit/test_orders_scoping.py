"""Order queries are always scoped: one store, and one customer or one proven guest order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from answering_support import World, seed_world

from chatbot.errors import NotFoundError
from knowledge_base import orders
from tests.pg import throwaway_pg_database


@pytest.fixture()
def world(tmp_path: Path) -> World:
    return seed_world(tmp_path)


def test_customer_orders_are_only_their_own(world: World) -> None:
    with world.db.sessions() as s:
        alice = orders.customer_orders(s, world.shop, world.alice)
        bob = orders.customer_orders(s, world.shop, world.bob)
        none = orders.customer_orders(s, world.shop, world.nobody)
    assert {o.number for o in alice} == {"#W1000001", "#W1000002"}
    assert [o.number for o in bob] == ["#W2000001"]
    assert none == []
    # Details are loaded, so facts can be built after the session closed.
    names = {i.name for o in alice for i in o.items}
    assert names == {"Water Bottle", "Office Chair", "Running Shoes"}


def test_customer_orders_never_cross_stores(world: World) -> None:
    with world.db.sessions() as s:
        # Carol's id asked for in the wrong store: nothing.
        assert orders.customer_orders(s, world.shop, world.carol) == []
        assert orders.customer_orders(s, world.other, world.alice) == []


@pytest.mark.parametrize("spelling", ["#W1000001", "W1000001", "w1000001", " #w1000001 "])
def test_order_for_customer_accepts_spellings(world: World, spelling: str) -> None:
    with world.db.sessions() as s:
        order = orders.order_for_customer(s, world.shop, world.alice, spelling)
    assert order is not None and order.number == "#W1000001"


@pytest.mark.parametrize(
    ("store", "customer", "number"),
    [
        ("shop", "alice", "#W2000001"),  # bob's order
        ("shop", "alice", "#W9999999"),  # does not exist
        ("shop", "alice", "#W3000001"),  # exists in the other store
        ("other", "carol", "#W1000001"),  # alice's order, asked from the other store
        ("shop", "alice", ""),
        ("shop", "alice", "#"),
    ],
)
def test_order_for_customer_refuses_everything_else(
    world: World, store: str, customer: str, number: str
) -> None:
    with world.db.sessions() as s:
        found = orders.order_for_customer(
            s, getattr(world, store), getattr(world, customer), number
        )
    assert found is None


def test_verify_guest_order_needs_the_matching_email(world: World) -> None:
    with world.db.sessions() as s:
        ok = orders.verify_guest_order(s, world.shop, "W1000001", "  Alice@Example.com ")
        wrong_email = orders.verify_guest_order(s, world.shop, "#W1000001", "bob@example.com")
        empty_email = orders.verify_guest_order(s, world.shop, "#W1000001", "")
        missing = orders.verify_guest_order(s, world.shop, "#W9999999", "alice@example.com")
        # Carol in the other store has alice's email; her order is not reachable from "shop".
        other_store = orders.verify_guest_order(s, world.shop, "#W3000001", "alice@example.com")
    assert ok is not None and ok.number == "#W1000001"
    assert wrong_email is None and empty_email is None
    assert missing is None and other_store is None


def test_verified_guest_orders_stay_in_their_store(world: World) -> None:
    with world.db.sessions() as s:
        here = orders.verified_guest_orders(s, world.shop, ["#W1000001"])
        there = orders.verified_guest_orders(s, world.other, ["#W1000001"])
    assert [o.number for o in here] == ["#W1000001"]
    assert there == []


def test_find_customer_by_source_id_email_or_id(world: World) -> None:
    with world.db.sessions() as s:
        assert orders.find_customer(s, world.shop, "alice_1").id == world.alice
        assert orders.find_customer(s, world.shop, "BOB@example.com").id == world.bob
        assert orders.find_customer(s, world.shop, str(world.alice)).id == world.alice
        with pytest.raises(NotFoundError):
            orders.find_customer(s, world.shop, "carol_4")  # other store's customer


@pytest.fixture()
def pg_world(tmp_path: Path) -> Iterator[World]:
    """The same world in a throwaway PostgreSQL database (skips when PG is unreachable)."""
    with throwaway_pg_database() as url:
        world = seed_world(tmp_path, url=url)
        yield world
        world.db.dispose()


@pytest.mark.postgres
def test_scoping_holds_on_postgres(pg_world: World) -> None:
    with pg_world.db.sessions() as s:
        assert orders.order_for_customer(s, pg_world.shop, pg_world.alice, "#W2000001") is None
        assert orders.order_for_customer(s, pg_world.shop, pg_world.alice, "w1000001") is not None
        assert orders.verify_guest_order(s, pg_world.shop, "#W3000001", "alice@example.com") is None
        assert orders.verify_guest_order(s, pg_world.shop, "#W1000001", "ALICE@example.com")
        assert [o.number for o in orders.customer_orders(s, pg_world.shop, pg_world.alice)] == [
            "#W1000002",
            "#W1000001",
        ]
