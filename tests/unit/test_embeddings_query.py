"""The fast single-query path gives the vectors sentence-transformers gives."""

from __future__ import annotations

import numpy as np
import pytest

from knowledge_base.embeddings import DIM, Embedder, _FastBert

QUERIES = [
    "where is my order",
    "  Can I return a tent I already slept in?  ",
    "NW-TNT-2P-GRN in stock?",
    "do you ship to canada and how much does express delivery cost for a 2 person tent",
    "x",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder().load()


def test_fast_query_vectors_match_sentence_transformers(embedder: Embedder) -> None:
    reference = embedder._ensure_model().encode(
        QUERIES, normalize_embeddings=True, convert_to_numpy=True
    )
    fast = np.stack([embedder.encode_query_uncached(q) for q in QUERIES])
    assert fast.shape == (len(QUERIES), DIM) and fast.dtype == np.float32
    cosines = (fast * reference).sum(axis=1)
    assert cosines.min() > 0.9999, cosines
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)


def test_plain_linear_fallback_gives_the_same_vectors(
    embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import knowledge_base.embeddings as emb

    model = embedder._ensure_model()
    monkeypatch.setattr(emb, "_onednn_linear_works", lambda: False)
    fallback = _FastBert(model[0].auto_model)
    assert not fallback.packed
    ids = torch.tensor(model.tokenizer("is the rain jacket waterproof")["input_ids"])
    with torch.inference_mode():
        a = fallback(ids).numpy()
    b = embedder.encode_query_uncached("is the rain jacket waterproof")
    assert float(a @ b) > 0.9999


def test_query_cache_returns_the_cached_vector_and_uncached_recomputes(
    embedder: Embedder,
) -> None:
    before = embedder.texts_encoded
    first = embedder.encode_query("cache me please")
    second = embedder.encode_query("cache me please")
    assert second is first
    assert embedder.texts_encoded == before + 1
    embedder.encode_query_uncached("cache me please")
    assert embedder.texts_encoded == before + 2


def test_every_tokenizer_call_holds_the_tokenizer_lock(
    embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast tokenizer sets padding/truncation on its shared Rust object each call: a
    document batch tokenized while another thread tokenized a query came out unpadded
    ("Unable to create tensor", seen with concurrent asks). Every call must hold the lock."""
    tokenizer = embedder._ensure_model().tokenizer
    call = type(tokenizer).__call__
    held: list[bool] = []

    def watched(self: object, *args: object, **kwargs: object) -> object:
        if self is tokenizer:
            held.append(embedder._tokenizer_lock.locked())
        return call(self, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", watched)
    embedder.encode(["where is my order", "can I return worn shoes after thirty days?"])
    embedder.encode_query_uncached("a query nobody asked before")
    assert len(held) >= 2 and all(held)
