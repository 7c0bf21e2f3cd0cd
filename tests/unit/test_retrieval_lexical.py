"""The lexical half of retrieval: tokenizer, identifiers and BM25."""

from __future__ import annotations

import math

import pytest

from knowledge_base.lexical import BM25, identifiers, is_identifier, tokenize


def test_tokenize_keeps_identifiers_whole_and_adds_their_parts() -> None:
    tokens = tokenize("Is SKU NW-TNT-2P-GRN in stock?")
    assert "nw-tnt-2p-grn" in tokens
    assert {"nw", "tnt", "2p", "grn", "sku", "stock"} <= set(tokens)
    assert "is" not in tokens and "in" not in tokens


def test_tokenize_order_numbers_prices_and_stemming() -> None:
    assert "w2611340" in tokenize("where is #W2611340")
    assert tokenize("$5.95") == ["5.95"]
    assert tokenize("returns returned returning") == ["return", "return", "return"]
    assert tokenize("policies boxes") == ["policy", "box"]
    assert tokenize("the and of", keep_stopwords=True) == ["the", "and", "of"]


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("nw10482", True),
        ("w2611340", True),
        ("nw-tnt-2p-grn", True),
        ("sku-12345", True),
        ("ab-12-cd", True),
        ("2-person", False),
        ("30-day", False),
        ("5.95", False),
        ("2024-01-05", False),
        ("tent", False),
        ("2pm", False),
    ],
)
def test_is_identifier(token: str, expected: bool) -> None:
    assert is_identifier(token) is expected


def test_identifiers_of_a_query() -> None:
    assert identifiers("do you have NW-TNT-2P-GRN or nw-cup-01 for a 2-person trip") == [
        "nw-tnt-2p-grn", "nw-cup-01"
    ]


def _bm25() -> BM25:
    docs = {
        10: "return policy thirty days refund",
        11: "shipping takes five days standard shipping",
        12: "tent two person green tent tent",
        13: "gift card balance",
    }
    return BM25((i, tokenize(t)) for i, t in docs.items())


def test_bm25_ranks_the_document_with_the_rare_terms_first() -> None:
    bm25 = _bm25()
    top = bm25.top(tokenize("how long does shipping take"), 3)
    assert top[0][0] == 11
    assert [i for i, _ in bm25.top(tokenize("green tent"), 5)] == [12]
    assert bm25.top(tokenize("zebra"), 5) == []


def test_bm25_scores_match_the_okapi_formula() -> None:
    bm25 = _bm25()
    ids, scores = bm25.scores(["gift"])
    assert ids.tolist() == [13]
    n, df = 4, 1
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    lengths = [5, 6, 6, 3]
    avg = sum(lengths) / n
    expected = idf * 1 * 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * 3 / avg))
    assert scores[0] == pytest.approx(expected, rel=1e-5)


def test_bm25_query_weight_counts_unknown_terms_as_rare() -> None:
    bm25 = _bm25()
    known = bm25.query_weight(["gift"])
    assert bm25.query_weight(["gift", "zzzz"]) > 2 * known
    assert bm25.idf("zzzz") > bm25.idf("day")


def test_bm25_postings_and_empty_index() -> None:
    bm25 = _bm25()
    assert sorted(bm25.postings("day").tolist()) == [10, 11]
    empty = BM25([])
    assert empty.top(["x"], 3) == [] and empty.query_weight(["x"]) == 0.0
