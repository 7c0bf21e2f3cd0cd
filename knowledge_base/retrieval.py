"""Hybrid retrieval over one store's articles and products, returning typed hits.

Each store has its own index (:mod:`knowledge_base.index`), so a search can only ever see
the rows of the store it was asked about. Orders are never indexed: order facts come from
SQL in :mod:`knowledge_base.orders`, scoped to one customer.

Scoring, per candidate chunk (the union of the dense and the BM25 top lists)::

    score = DENSE_WEIGHT * cosine + LEXICAL_WEIGHT * matched_query_weight
            + TITLE_BONUS  (when every word of the source's title is in the query)

and a chunk containing every identifier of the query (a SKU, a model number) is lifted
above all others: those are exact words, and a shopper quoting one means that product.
Chunks are then merged per source (its best chunk wins), so ``k`` hits are ``k`` distinct
articles or products. The weights were tuned on ``bench/data/retrieval_questions.jsonl``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from chatbot.errors import StoreNotFoundError
from chatbot.storage.db import Database
from knowledge_base.chunking import Chunk, chunk_store
from knowledge_base.embeddings import Embedder, shared_embedder
from knowledge_base.index import (
    IndexCorruptError,
    IndexedChunk,
    Snapshot,
    StoreIndex,
    plan_sync,
)
from knowledge_base.lexical import identifiers, tokenize
from knowledge_base.models import Article, Product, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

# Tuned with the sweep in bench/retrieval.py on the labelled demo-store questions: recall@5
# is flat for dense weights 0.5-0.9 and MRR peaks near 0.8; the title bonus is neutral on
# that set and kept small, so a product name typed in full wins ties without swamping
# the meaning of the rest of the question.
DENSE_WEIGHT = 0.8
LEXICAL_WEIGHT = 0.2
TITLE_BONUS = 0.05
# How many chunks each side proposes before fusion.
CANDIDATES = 50


@dataclass(frozen=True)
class Hit:
    """One retrieved article or product, with the chunk that matched."""

    kind: str  # "faq" | "policy" | "product"
    id: str  # the row's source id (Article.source_id / Product.source_id)
    title: str
    snippet: str  # the chunk text that matched
    score: float  # higher is better, roughly 0..1
    url: str = ""


@dataclass(frozen=True)
class SyncStats:
    """What one incremental sync did."""

    store_id: int
    added: int
    updated: int
    removed: int
    unchanged: int
    embedded: int
    total: int
    seconds: float
    generation: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


@dataclass(frozen=True)
class Weights:
    """Fusion weights; the defaults are the tuned ones."""

    dense: float = DENSE_WEIGHT
    lexical: float = LEXICAL_WEIGHT
    title: float = TITLE_BONUS


def _single_threaded_math() -> None:
    import torch

    # Both calls only change the calling (worker) thread's OpenMP settings.
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


class QueryThread:
    """A worker thread that runs query-time math (embedding, FAISS) on one OpenMP thread.

    One short query gains nothing from a second thread, and on a busy 2-core machine
    (the LM engine decoding, other processes) OpenMP threads waiting for each other made
    a 241-chunk search take ~30 ms and a query embedding ~0.9 s at p50, against ~0.1 ms
    and ~30 ms single-threaded (measured with bench/retrieval.py). Thread counts are per
    thread, so the caller's own settings (and the engine's) are untouched.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=1, thread_name_prefix="retrieval-query",
                        initializer=_single_threaded_math,
                    )
        return self._pool.submit(fn).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


@functools.lru_cache(maxsize=65536)
def _title_terms(title: str) -> frozenset[str]:
    return frozenset(tokenize(title))


class Retriever:
    """Syncs and searches the per-store indexes under ``index_dir``.

    One instance per process is enough (it caches each store's loaded index); several
    processes may share the same ``index_dir``: each notices the others' writes.
    """

    def __init__(
        self,
        db: Database,
        index_dir: Path,
        embedder: Embedder | None = None,
        *,
        weights: Weights | None = None,
    ) -> None:
        self.db = db
        self.index_dir = Path(index_dir)
        self._embedder = embedder
        self.weights = weights or Weights()
        self._indexes: dict[int, StoreIndex] = {}
        self._query_thread = QueryThread()

    def close(self) -> None:
        """Stop the query thread and close the index files (safe to call twice)."""
        self._query_thread.close()
        for index in self._indexes.values():
            index.close()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = shared_embedder()
        return self._embedder

    def store_index(self, store_id: int) -> StoreIndex:
        index = self._indexes.get(store_id)
        if index is None:
            index = self._indexes.setdefault(store_id, StoreIndex(self.index_dir, store_id))
        return index

    def generation(self, store_id: int) -> int | None:
        """The store's committed index generation (None before its first sync). It changes
        with every sync that changes a chunk, in whichever process ran it, so callers can
        key their own caches of the store's rows on it."""
        snapshot = self.store_index(store_id).snapshot()
        return snapshot.generation if snapshot is not None else None

    # -- building ------------------------------------------------------------------

    def store_chunks(self, store_id: int) -> list[Chunk]:
        """Every chunk the store's database rows produce right now."""
        with self.db.session() as session:
            if session.get(Store, store_id) is None:
                raise StoreNotFoundError(f"no store with id {store_id}")
            articles = session.scalars(select(Article).where(Article.store_id == store_id)).all()
            products = session.scalars(
                select(Product)
                .where(Product.store_id == store_id)
                .options(selectinload(Product.variants))
            ).all()
            return chunk_store(articles, products)

    def is_stale(self, store_id: int) -> bool:
        """True when the index is missing or differs from the database rows."""
        index = self.store_index(store_id)
        try:
            snapshot = index.snapshot()
        except IndexCorruptError:
            return True
        if snapshot is None:
            return True
        plan = plan_sync(snapshot, self.store_chunks(store_id))
        return bool(plan.to_embed or plan.remove_ids)

    def sync(self, store_id: int, *, progress: bool = False) -> SyncStats:
        """Bring the store's index up to date, embedding only new or changed chunks."""
        started = time.perf_counter()
        with self.db.session() as session:
            if session.get(Store, store_id) is None:
                raise StoreNotFoundError(f"no store with id {store_id}")
        index = self.store_index(store_id)
        with index.write_lock():
            # Read the rows under the lock: a slower concurrent sync holding an older
            # read of the database must not overwrite a newer index with it.
            chunks = self.store_chunks(store_id)
            try:
                base = index.snapshot()
            except IndexCorruptError as exc:
                log.warning("%s; rebuilding the index of store %s", exc, store_id)
                index.destroy()
                base = None
            plan = plan_sync(base, chunks)
            if base is not None and not plan.to_embed and not plan.remove_ids:
                snapshot: Snapshot = base
            else:
                vectors = self.embedder.encode(
                    [chunk.embed_text for chunk in plan.to_embed], progress=progress
                )
                snapshot = index.apply(base, plan.to_embed, vectors, plan.remove_ids)
        stats = SyncStats(
            store_id=store_id,
            added=plan.added,
            updated=plan.updated,
            removed=plan.removed,
            unchanged=plan.unchanged,
            embedded=len(plan.to_embed),
            total=len(snapshot),
            seconds=time.perf_counter() - started,
            generation=snapshot.generation,
        )
        log.info(
            "synced store %s: %d added, %d updated, %d removed, %d unchanged in %.2fs",
            store_id, stats.added, stats.updated, stats.removed, stats.unchanged, stats.seconds,
        )
        return stats

    # -- searching -----------------------------------------------------------------

    def _snapshot(self, store_id: int) -> Snapshot:
        index = self.store_index(store_id)
        try:
            snapshot = index.snapshot()
        except IndexCorruptError as exc:
            log.warning("%s", exc)
            snapshot = None
        if snapshot is None:
            # First search of a store that was never indexed: build it now.
            self.sync(store_id)
            snapshot = index.snapshot()
            assert snapshot is not None
        return snapshot

    def search(self, store_id: int, query: str, k: int = 5) -> list[Hit]:
        """The ``k`` best distinct articles/products of this store for ``query``."""
        query = query.strip()
        if not query or k <= 0:
            return []
        snapshot = self._snapshot(store_id)
        if not len(snapshot):
            return []
        embedder, weights = self.embedder, self.weights
        return self._query_thread.run(
            lambda: rank(snapshot, query, embedder.encode_query(query), k, weights)
        )


def rank(snapshot: Snapshot, query: str, vector: np.ndarray, k: int,
         weights: Weights | None = None) -> list[Hit]:
    """Fuse dense and lexical candidates of one snapshot into ``k`` hits (no I/O)."""
    weights = weights or Weights()
    terms = tokenize(query)
    query_terms = frozenset(terms)
    dense = dict(snapshot.dense(vector, CANDIDATES))
    lexical = dict(snapshot.bm25.top(terms, CANDIDATES)) if terms else {}
    query_weight = snapshot.bm25.query_weight(terms) if terms else 0.0

    # Chunks holding every identifier of the query (SKUs, model numbers) come first.
    exact: set[int] = set()
    ids = [t for t in identifiers(query) if t in snapshot.bm25.vocab]
    if ids:
        sets = [set(snapshot.bm25.postings(t).tolist()) for t in ids]
        exact = set.intersection(*sets)
        exact &= snapshot.rows.keys()

    candidates = set(dense) | set(lexical) | exact
    missing = [fid for fid in candidates if fid not in dense]
    if missing:
        cosines = snapshot.vectors(missing) @ vector
        dense.update(zip(missing, (float(c) for c in cosines), strict=True))

    best: dict[tuple[str, str], tuple[float, float, IndexedChunk]] = {}
    for fid in candidates:
        row = snapshot.rows.get(fid)
        if row is None:
            continue
        matched = min(1.0, lexical.get(fid, 0.0) / query_weight) if query_weight else 0.0
        score = weights.dense * max(dense[fid], 0.0) + weights.lexical * matched
        title_terms = _title_terms(row.title)
        if title_terms and title_terms <= query_terms:
            score += weights.title
        score = min(score, 1.0)
        # Exact identifier matches sort above everything else, and say so in their score.
        rank_key = (2.0 + score) if fid in exact else score
        if exact and fid in exact:
            score = max(score, 0.9)
        source = (row.kind, row.source_id)
        if source not in best or rank_key > best[source][0]:
            best[source] = (rank_key, score, row)
    ordered = sorted(best.values(), key=lambda item: (-item[0], item[2].source_id))
    return [
        Hit(row.kind, row.source_id, row.title, row.text, round(score, 4), row.url)
        for _, score, row in ordered[:k]
    ]
