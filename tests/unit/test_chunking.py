"""Chunking of articles and products: sizes, titles, stable keys and content hashes."""

from __future__ import annotations

from decimal import Decimal

from knowledge_base.chunking import (
    MAX_WORDS,
    MIN_WORDS,
    chunk_article,
    chunk_product,
    chunk_store,
    chunk_text,
    word_count,
)
from knowledge_base.models import Article, Product, Variant


def _para(topic: str, words: int) -> str:
    sentence = f"The {topic} rule applies to every order we ship from the warehouse today."
    out: list[str] = []
    while word_count(" ".join(out)) < words:
        out.append(sentence)
    return " ".join(out)


def _article(body: str, **kw: str) -> Article:
    fields = {"source_id": "returns-policy", "kind": "policy", "title": "Returns policy",
              "url": "/pages/returns"}
    fields.update(kw)
    return Article(body=body, **fields)


def _product(**kw: object) -> Product:
    product = Product(
        source_id="ridgeline-tent", title="Ridgeline 2-Person Tent", product_type="Tents",
        vendor="Northwind", description="A light  three-season\n tent for two.",
        option_names=["color", "size"], tags=["camping", "tents"], url="/products/ridgeline",
    )
    product.variants = [
        Variant(source_id="v1", sku="NW-TNT-2P-GRN", options={"color": "Green", "size": "2P"},
                price=Decimal("199.00"), available=True),
        Variant(source_id="v2", sku="NW-TNT-2P-ORG", title="Orange / 2P",
                options={"color": "Orange", "size": "2P"}, price=Decimal("219.50"),
                available=False),
    ]
    for key, value in kw.items():
        setattr(product, key, value)
    return product


def test_short_article_is_one_chunk_with_title_in_embedded_text() -> None:
    chunks = chunk_article(_article("You have 30 days to return unworn items."))
    assert len(chunks) == 1
    chunk = chunks[0]
    assert chunk.key == ("policy", "returns-policy", 0)
    assert chunk.text == "You have 30 days to return unworn items."
    assert chunk.embed_text.startswith("Returns policy\n")
    assert chunk.url == "/pages/returns"


def test_long_article_is_cut_into_80_to_200_word_chunks_at_paragraphs() -> None:
    paragraphs = [_para(f"topic{i}", 70) for i in range(8)]
    chunks = chunk_article(_article("\n\n".join(paragraphs)))
    assert len(chunks) > 1
    assert [c.chunk_no for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert MIN_WORDS <= word_count(chunk.text) <= MAX_WORDS, chunk.text
        assert chunk.embed_text.startswith("Returns policy")
    # Paragraphs are never split when they fit: each stays whole inside one chunk.
    joined = [p for c in chunks for p in c.text.split("\n\n")]
    assert joined == paragraphs


def test_a_giant_paragraph_is_cut_at_sentence_ends() -> None:
    body = _para("giant", 520)
    chunks = chunk_text("faq", "giant", "Giant", body)
    assert len(chunks) >= 3
    for chunk in chunks:
        assert word_count(chunk.text) <= MAX_WORDS
        assert chunk.text.endswith(".")
    assert " ".join(c.text for c in chunks).split() == body.split()


def test_headings_start_new_chunks_and_travel_with_them() -> None:
    body = "Intro line.\n\n## Refunds\nRefunds take 5 days.\n\n## Exchanges\nSwap sizes free."
    chunks = chunk_text("policy", "p", "Returns", body)
    assert [(c.heading, c.text) for c in chunks] == [
        ("", "Intro line."),
        ("Refunds", "Refunds take 5 days."),
        ("Exchanges", "Swap sizes free."),
    ]
    assert chunks[1].embed_text == "Returns - Refunds\nRefunds take 5 days."


def test_empty_body_still_gives_a_title_chunk() -> None:
    chunks = chunk_text("faq", "empty", "Gift wrapping", "  \n\n ")
    assert len(chunks) == 1 and chunks[0].text == "Gift wrapping"


def test_product_chunk_lists_every_fact_a_shopper_asks_about() -> None:
    chunk = chunk_product(_product())
    assert chunk.key == ("product", "ridgeline-tent", 0)
    assert chunk.title == "Ridgeline 2-Person Tent"
    text = chunk.text
    assert "Type: Tents" in text and "Brand: Northwind" in text
    assert "A light three-season tent for two." in text  # whitespace normalised
    assert "Color options: Green, Orange." in text
    assert "Size options: 2P." in text
    assert "Price: $199.00 to $219.50." in text
    assert "1 of 2 variants in stock; sold out: Orange / 2P." in text
    assert "SKUs: NW-TNT-2P-GRN, NW-TNT-2P-ORG." in text
    assert chunk.url == "/products/ridgeline"
    assert chunk.embed_text.startswith("Ridgeline 2-Person Tent\n")


def test_product_availability_all_or_nothing() -> None:
    product = _product()
    for v in product.variants:
        v.available = False
    assert "Availability: out of stock." in chunk_product(product).text
    for v in product.variants:
        v.available = True
        v.price = Decimal("10")
    text = chunk_product(product).text
    assert "Availability: in stock." in text and "Price: $10.00." in text


def test_content_hash_is_stable_and_moves_only_with_content() -> None:
    a = chunk_article(_article("Thirty days."))[0]
    b = chunk_article(_article("Thirty days."))[0]
    assert a.content_hash == b.content_hash
    assert chunk_article(_article("Sixty days."))[0].content_hash != a.content_hash
    assert chunk_article(_article("Thirty days.", title="Returns"))[0].content_hash != (
        a.content_hash
    )
    assert chunk_article(_article("Thirty days.", url="/x"))[0].content_hash != a.content_hash
    product = _product()
    before = chunk_product(product).content_hash
    product.variants[1].available = True
    assert chunk_product(product).content_hash != before


def test_chunk_store_is_deterministic_and_never_contains_orders() -> None:
    articles = [_article("B body.", source_id="b"), _article("A body.", source_id="a")]
    products = [_product(source_id="p2"), _product(source_id="p1")]
    chunks = chunk_store(articles, products)
    assert [c.key for c in chunks] == [
        ("policy", "a", 0), ("policy", "b", 0), ("product", "p1", 0), ("product", "p2", 0)
    ]
    assert chunks == chunk_store(list(reversed(articles)), list(reversed(products)))
    assert {c.kind for c in chunks} <= {"faq", "policy", "product"}
