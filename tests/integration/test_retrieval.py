"""Retrieval end to end: real MiniLM, real FAISS, real SQLite (and PostgreSQL when reachable)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from chatbot.errors import StoreNotFoundError
from chatbot.storage.db import Database
from knowledge_base.chunking import chunk_article
from knowledge_base.embeddings import Embedder
from knowledge_base.models import Article, Customer, Order, Product, Store, Variant
from knowledge_base.retrieval import Retriever
from tests.pg import throwaway_pg_database

ARTICLES = {
    "returns-policy": ("policy", "Returns policy",
                       "You can return unworn, unwashed items within 30 days of delivery for a "
                       "full refund to the original payment method. Final-sale items cannot be "
                       "returned.\n\nStart a return from Account > Orders and print the free "
                       "prepaid label."),
    "shipping-times": ("faq", "How long does shipping take?",
                       "Standard shipping takes 5-7 business days and costs $5.95. Expedited "
                       "shipping takes 2-3 business days for $14.95."),
    "lost-package": ("faq", "My package never arrived",
                     "If tracking says delivered but you cannot find your parcel, check with "
                     "neighbours and wait one business day. Then contact us and we will open "
                     "a claim with the carrier and send a replacement."),
    "gift-cards": ("faq", "Do gift cards expire?",
                   "Gift cards never expire and can be used online on any order. Check your "
                   "balance on the gift card page."),
    "size-guide": ("faq", "How do your boots fit?",
                   "Our hiking boots run true to size. If you are between sizes, order the "
                   "larger size; wide widths are available for most styles."),
}

PRODUCTS = {
    "ridgeline-tent": ("Ridgeline 2-Person Tent", "Tents",
                       "A light three-season backpacking tent with two doors.",
                       [("NW-TNT-2P-GRN", "Green", "249.00"),
                        ("NW-TNT-2P-ORG", "Orange", "249.00")]),
    "summit-tent": ("Summit 4-Person Tent", "Tents",
                    "A roomy family camping tent with a vestibule.",
                    [("NW-TNT-4P-GRN", "Green", "399.00")]),
    "trail-boot": ("Trailblazer Hiking Boot", "Footwear",
                   "Waterproof leather hiking boot with a grippy sole.",
                   [("NW-BT-TB-10", "10", "159.00"), ("NW-BT-TB-11", "11", "159.00")]),
}


@dataclass
class World:
    db: Database
    index_dir: Path
    shop: int
    other: int


def _seed(db: Database, suffix: str = "") -> tuple[int, int]:
    with db.transaction() as s:
        shop = Store(name=f"shop{suffix}", widget_key=f"shop{suffix}")
        other = Store(name=f"other{suffix}", widget_key=f"other{suffix}")
        s.add_all([shop, other])
        s.flush()
        for store, prefix in ((shop, ""), (other, "other-")):
            for sid, (kind, title, body) in ARTICLES.items():
                s.add(Article(store_id=store.id, source_id=prefix + sid, kind=kind, title=title,
                              body=body, url=f"/pages/{sid}"))
        s.add(Article(store_id=other.id, source_id="other-gift-wrap", kind="faq",
                      title="Do you offer gift wrapping?",
                      body="Yes, gift wrapping with a handwritten note costs $4."))
        for sid, (title, ptype, desc, variants) in PRODUCTS.items():
            product = Product(store_id=shop.id, source_id=sid, title=title, product_type=ptype,
                              description=desc, option_names=["color"], url=f"/products/{sid}")
            product.variants = [
                Variant(store_id=shop.id, source_id=sku.lower(), sku=sku,
                        options={"color": opt}, price=Decimal(price))
                for sku, opt, price in variants
            ]
            s.add(product)
        customer = Customer(store_id=shop.id, source_id="noah_1", email="noah@example.com")
        s.add(customer)
        s.flush()
        s.add(Order(store_id=shop.id, customer_id=customer.id, number="#W2611340",
                    status="shipped", placed_at=datetime(2026, 1, 2), email="noah@example.com"))
        return shop.id, other.id


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder().load()


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
    shop, other = _seed(db)
    yield World(db, tmp_path / "indexes", shop, other)
    db.dispose()


@pytest.fixture()
def pg_world(tmp_path: Path) -> Iterator[World]:
    """The same stores in a throwaway PostgreSQL database (skips when PG is unreachable)."""
    with throwaway_pg_database() as url:
        db = Database(url)
        shop, other = _seed(db)
        yield World(db, tmp_path / "indexes", shop, other)
        db.dispose()


def _ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.id for h in hits]


def test_first_sync_embeds_everything_then_nothing(world: World, embedder: Embedder) -> None:
    retriever = Retriever(world.db, world.index_dir, embedder)
    first = retriever.sync(world.shop)
    assert first.added == first.embedded == first.total == len(ARTICLES) + len(PRODUCTS)
    assert (world.index_dir / f"store-{world.shop}" / "chunks.sqlite").exists()
    second = retriever.sync(world.shop)
    assert second.embedded == 0 and second.unchanged == first.total and not second.changed
    assert second.generation == first.generation


def test_editing_one_article_reembeds_only_its_chunks(world: World, embedder: Embedder) -> None:
    retriever = Retriever(world.db, world.index_dir, embedder)
    retriever.sync(world.shop)
    first = retriever.generation(world.shop)
    assert first is not None
    new_body = "\n\n".join(
        f"Paragraph {i}: " + "Returns are accepted within sixty days for store credit. " * 9
        for i in range(4)
    )
    with world.db.transaction() as s:
        article = s.scalars(select(Article).where(Article.store_id == world.shop,
                                                  Article.source_id == "returns-policy")).one()
        article.body = new_body
        expected = len(chunk_article(article))
    assert expected > 1
    before = embedder.texts_encoded
    stats = retriever.sync(world.shop)
    # One chunk existed, now there are ``expected``: 1 updated + the rest added.
    assert stats.embedded == expected == embedder.texts_encoded - before
    assert (stats.updated, stats.added, stats.removed) == (1, expected - 1, 0)
    # a new generation (what caches of the store's rows key on, e.g. the pipeline's catalogue)
    assert retriever.generation(world.shop) == first + 1
    assert Retriever(world.db, world.index_dir, embedder).generation(world.shop) == first + 1
    hits = retriever.search(world.shop, "can I return things after sixty days", k=3)
    assert hits[0].id == "returns-policy" and "sixty days" in hits[0].snippet


def test_deleted_rows_disappear_from_results(world: World, embedder: Embedder) -> None:
    retriever = Retriever(world.db, world.index_dir, embedder)
    retriever.sync(world.shop)
    assert retriever.search(world.shop, "do gift cards expire", k=1)[0].id == "gift-cards"
    with world.db.transaction() as s:
        s.delete(s.scalars(select(Article).where(Article.store_id == world.shop,
                                                 Article.source_id == "gift-cards")).one())
        s.delete(s.scalars(select(Product).where(Product.source_id == "summit-tent")).one())
    assert retriever.is_stale(world.shop)
    stats = retriever.sync(world.shop)
    assert stats.removed == 2 and stats.embedded == 0
    ids = _ids(retriever.search(world.shop, "gift card expiry balance family tent", k=10))
    assert "gift-cards" not in ids and "summit-tent" not in ids
    assert not retriever.is_stale(world.shop)


def test_search_never_returns_another_stores_rows(world: World, embedder: Embedder) -> None:
    retriever = Retriever(world.db, world.index_dir, embedder)
    for query in ("return policy 30 days", "how long does shipping take", "gift wrapping",
                  "NW-TNT-2P-GRN", "hiking boots fit"):
        shop_hits = retriever.search(world.shop, query, k=10)
        other_hits = retriever.search(world.other, query, k=10)
        assert shop_hits and other_hits
        assert not any(h.id.startswith("other-") for h in shop_hits)
        assert all(h.id.startswith("other-") for h in other_hits)
    assert retriever.search(world.other, "gift wrapping", k=1)[0].id == "other-gift-wrap"


def test_a_sku_in_the_query_returns_that_product_first(world: World, embedder: Embedder) -> None:
    retriever = Retriever(world.db, world.index_dir, embedder)
    for sku, product in (("NW-TNT-4P-GRN", "summit-tent"), ("nw-tnt-2p-org", "ridgeline-tent"),
                         ("NW-BT-TB-11", "trail-boot")):
        hits = retriever.search(world.shop, f"is {sku} still in stock?", k=3)
        assert hits[0].id == product and hits[0].kind == "product", (sku, hits)
        assert sku.upper() in hits[0].snippet
        assert hits[0].score >= 0.9


def test_hybrid_ranking_finds_paraphrases_and_product_names(
    world: World, embedder: Embedder
) -> None:
    retriever = Retriever(world.db, world.index_dir, embedder)
    cases = {
        "my parcel never showed up": "lost-package",
        "how many days till my stuff gets here": "shipping-times",
        "can I get my money back on a jacket": "returns-policy",
        "do the boots run small": "size-guide",
        "summit tent": "summit-tent",
        "Ridgeline tent price": "ridgeline-tent",
    }
    for query, expected in cases.items():
        hits = retriever.search(world.shop, query, k=3)
        assert hits[0].id == expected, (query, _ids(hits))
    hit = retriever.search(world.shop, "my parcel never showed up", k=1)[0]
    assert hit.kind == "faq" and hit.title == "My package never arrived"
    assert hit.url == "/pages/lost-package" and "claim with the carrier" in hit.snippet
    assert 0.35 <= hit.score <= 1.0
    ids = _ids(retriever.search(world.shop, "my parcel never showed up", k=20))
    assert len(ids) == len(set(ids)) == len(ARTICLES) + len(PRODUCTS)


def test_orders_are_never_indexed(world: World, embedder: Embedder) -> None:
    retriever = Retriever(world.db, world.index_dir, embedder)
    hits = retriever.search(world.shop, "where is my order #W2611340", k=20)
    assert {h.kind for h in hits} <= {"faq", "policy", "product"}
    snapshot = retriever.store_index(world.shop).snapshot()
    assert snapshot is not None
    assert not any("W2611340" in row.text or row.kind == "order" for row in snapshot.rows.values())


def test_index_persists_across_retriever_instances(world: World, embedder: Embedder) -> None:
    first = Retriever(world.db, world.index_dir, embedder)
    first.sync(world.shop)
    expected = first.search(world.shop, "expedited shipping cost", k=3)
    before = embedder.texts_encoded
    second = Retriever(world.db, world.index_dir, embedder)
    assert second.store_index(world.shop).exists()
    assert second.search(world.shop, "expedited shipping cost", k=3) == expected
    assert second.sync(world.shop).embedded == 0
    # The query itself was cached by the embedder; nothing else was embedded.
    assert embedder.texts_encoded == before


def test_writes_in_one_retriever_reach_another(world: World, embedder: Embedder) -> None:
    reader = Retriever(world.db, world.index_dir, embedder)
    writer = Retriever(world.db, world.index_dir, embedder)
    reader.sync(world.shop)
    with world.db.transaction() as s:
        s.add(Article(store_id=world.shop, source_id="pet-policy", kind="policy",
                      title="Dogs in the store", body="Leashed dogs are welcome in our shops."))
    writer.sync(world.shop)
    assert reader.search(world.shop, "can I bring my dog", k=1)[0].id == "pet-policy"


def test_a_sync_in_another_process_is_seen_by_this_one(
    world: World, embedder: Embedder
) -> None:
    reader = Retriever(world.db, world.index_dir, embedder)
    reader.sync(world.shop)
    with world.db.transaction() as s:
        s.add(Article(store_id=world.shop, source_id="bike-racks", kind="faq",
                      title="Do you sell bike racks?", body="We sell roof and hitch bike racks."))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from chatbot.storage.db import Database\n"
        "from knowledge_base.retrieval import Retriever\n"
        "db = Database(sys.argv[1], run_migrations=False)\n"
        "stats = Retriever(db, Path(sys.argv[2])).sync(int(sys.argv[3]))\n"
        "print(stats.embedded, stats.generation)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, world.db.url, str(world.index_dir), str(world.shop)],
        capture_output=True, text=True, timeout=600, check=True,
    )
    assert done.stdout.split() == ["1", "2"]
    hits = reader.search(world.shop, "bicycle rack for my car roof", k=1)
    assert hits[0].id == "bike-racks"


def test_unknown_store_is_a_clear_error(world: World, embedder: Embedder) -> None:
    retriever = Retriever(world.db, world.index_dir, embedder)
    with pytest.raises(StoreNotFoundError):
        retriever.sync(9999)
    assert not (world.index_dir / "store-9999").exists()
    assert retriever.search(world.shop, "   ") == []


@pytest.mark.postgres
def test_sync_and_search_on_postgres(pg_world: World, embedder: Embedder) -> None:
    retriever = Retriever(pg_world.db, pg_world.index_dir, embedder)
    stats = retriever.sync(pg_world.shop)
    assert stats.embedded == len(ARTICLES) + len(PRODUCTS)
    assert retriever.search(pg_world.shop, "NW-BT-TB-10", k=1)[0].id == "trail-boot"
    shop_ids = _ids(retriever.search(pg_world.shop, "gift wrapping", k=10))
    assert "other-gift-wrap" not in shop_ids
    with pg_world.db.transaction() as s:
        s.delete(s.scalars(select(Article).where(Article.store_id == pg_world.shop,
                                                 Article.source_id == "lost-package")).one())
    assert retriever.sync(pg_world.shop).removed == 1
    assert "lost-package" not in _ids(retriever.search(pg_world.shop, "parcel never came", k=10))
