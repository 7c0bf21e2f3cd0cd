"""The per-store FAISS index and its sidecar mapping, with hand-made vectors (no model)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from knowledge_base.chunking import Chunk
from knowledge_base.index import SIDECAR, IndexCorruptError, StoreIndex, plan_sync
from knowledge_base.retrieval import rank

DIM = 16


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _chunks(n: int, prefix: str = "a", text: str = "body") -> list[Chunk]:
    return [Chunk("faq", f"{prefix}{i}", 0, f"Title {prefix}{i}", f"{text} {i}") for i in range(n)]


def _sync(index: StoreIndex, chunks: list[Chunk], vectors: dict[str, np.ndarray]) -> int:
    """Apply an incremental sync of ``chunks``; returns how many chunks needed vectors."""
    with index.write_lock():
        base = index.snapshot()
        plan = plan_sync(base, chunks)
        vecs = np.stack([vectors[c.source_id] for c in plan.to_embed]) if plan.to_embed else (
            np.zeros((0, DIM), dtype=np.float32)
        )
        index.apply(base, plan.to_embed, vecs, plan.remove_ids)
    return len(plan.to_embed)


def _vec_map(chunks: list[Chunk], seed: int = 0) -> dict[str, np.ndarray]:
    return dict(zip((c.source_id for c in chunks), _vectors(len(chunks), seed), strict=True))


def test_index_survives_a_new_instance_with_the_same_mapping(tmp_path: Path) -> None:
    chunks = _chunks(20)
    vecs = _vec_map(chunks)
    first = StoreIndex(tmp_path, 7, dim=DIM)
    assert not first.exists() and first.snapshot() is None
    assert _sync(first, chunks, vecs) == 20
    first.close()

    second = StoreIndex(tmp_path, 7, dim=DIM)
    assert second.exists()
    snap = second.snapshot()
    assert snap is not None and len(snap) == 20 and snap.generation == 1
    row = snap.by_key[("faq", "a3", 0)]
    assert row.title == "Title a3" and row.content_hash == chunks[3].content_hash
    np.testing.assert_allclose(snap.vector(row.faiss_id), vecs["a3"], rtol=1e-6)
    assert snap.dense(vecs["a3"], 1)[0][0] == row.faiss_id


def test_incremental_sync_embeds_only_changed_chunks_and_hides_removed(tmp_path: Path) -> None:
    chunks = _chunks(10)
    vecs = _vec_map(chunks)
    index = StoreIndex(tmp_path, 1, dim=DIM)
    _sync(index, chunks, vecs)
    old_id = index.snapshot().by_key[("faq", "a4", 0)].faiss_id  # type: ignore[union-attr]

    edited = list(chunks)
    edited[4] = Chunk("faq", "a4", 0, "Title a4", "new text")
    del edited[7]
    vecs["a4"] = _vectors(1, seed=99)[0]
    plan = plan_sync(index.snapshot(), edited)
    assert (plan.added, plan.updated, plan.removed, plan.unchanged) == (0, 1, 1, 8)
    assert _sync(index, edited, vecs) == 1

    snap = index.snapshot()
    assert snap is not None and len(snap) == 9 and snap.generation == 2
    assert ("faq", "a7", 0) not in snap.by_key
    new_row = snap.by_key[("faq", "a4", 0)]
    assert new_row.faiss_id != old_id and new_row.text == "new text"
    # Ids of removed/replaced chunks are dead: searches never return them.
    returned = {fid for fid, _ in snap.dense(_vec_map(chunks)["a7"], 10)}
    assert returned <= set(snap.rows)
    assert len(returned) == 9
    # Nothing changed: no new generation.
    assert _sync(index, edited, vecs) == 0


def test_many_removals_compact_the_faiss_index(tmp_path: Path) -> None:
    chunks = _chunks(200)
    vecs = _vec_map(chunks)
    index = StoreIndex(tmp_path, 1, dim=DIM)
    _sync(index, chunks, vecs)
    _sync(index, chunks[:100], vecs)
    snap = index.snapshot()
    assert snap is not None
    assert snap.index.ntotal == 100 and len(snap.dead) == 0
    with sqlite3.connect(index.directory / SIDECAR) as conn:
        assert conn.execute("SELECT count(*) FROM dead").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 100
    assert len(list(index.directory.glob("vectors-*.faiss"))) == 1


def test_large_store_switches_to_hnsw_and_still_finds_exact_vectors(tmp_path: Path) -> None:
    chunks = _chunks(300)
    vecs = _vec_map(chunks)
    index = StoreIndex(tmp_path, 1, dim=DIM, hnsw_threshold=250)
    _sync(index, chunks[:100], vecs)
    assert index.snapshot().index_type == "flat"  # type: ignore[union-attr]
    _sync(index, chunks, vecs)
    snap = StoreIndex(tmp_path, 1, dim=DIM, hnsw_threshold=250).snapshot()
    assert snap is not None and snap.index_type == "hnsw" and len(snap) == 300
    found = sum(snap.dense(vecs[f"a{i}"], 1)[0][0] == snap.by_key[("faq", f"a{i}", 0)].faiss_id
                for i in range(0, 300, 10))
    assert found >= 29


def test_a_crash_before_the_commit_leaves_the_previous_generation(tmp_path: Path) -> None:
    chunks = _chunks(5)
    vecs = _vec_map(chunks)
    index = StoreIndex(tmp_path, 1, dim=DIM)
    _sync(index, chunks, vecs)
    # Simulate a writer that died after writing generation 2's file (and a temp file),
    # but before switching the sidecar to it.
    (index.directory / "vectors-2.faiss").write_bytes(b"half written garbage")
    (index.directory / ".vectors-3.faiss.tmp").write_bytes(b"junk")
    reader = StoreIndex(tmp_path, 1, dim=DIM)
    snap = reader.snapshot()
    assert snap is not None and snap.generation == 1 and len(snap) == 5
    # The next real write takes over and cleans the leftovers.
    more = _chunks(6)
    vecs.update(_vec_map(more[5:], seed=5))
    _sync(reader, more, vecs)
    assert sorted(p.name for p in index.directory.glob("*vectors-*")) == ["vectors-2.faiss"]
    assert len(StoreIndex(tmp_path, 1, dim=DIM).snapshot()) == 6  # type: ignore[arg-type]


def test_a_mapping_that_disagrees_with_the_vectors_is_reported(tmp_path: Path) -> None:
    index = StoreIndex(tmp_path, 1, dim=DIM)
    _sync(index, _chunks(5), _vec_map(_chunks(5)))
    with sqlite3.connect(index.directory / SIDECAR) as conn:
        conn.execute("DELETE FROM chunks WHERE source_id = 'a1'")
    with pytest.raises(IndexCorruptError, match="holds 5 vectors"):
        StoreIndex(tmp_path, 1, dim=DIM).snapshot()


def test_an_index_copied_to_another_store_is_refused(tmp_path: Path) -> None:
    index = StoreIndex(tmp_path, 1, dim=DIM)
    _sync(index, _chunks(3), _vec_map(_chunks(3)))
    shutil.copytree(index.directory, tmp_path / "store-2")
    with pytest.raises(IndexCorruptError, match="belongs to store 1"):
        StoreIndex(tmp_path, 2, dim=DIM).snapshot()


def test_a_reader_sees_another_writers_new_generation(tmp_path: Path) -> None:
    chunks = _chunks(4)
    vecs = _vec_map(chunks)
    writer = StoreIndex(tmp_path, 1, dim=DIM)
    reader = StoreIndex(tmp_path, 1, dim=DIM)
    _sync(writer, chunks, vecs)
    assert len(reader.snapshot()) == 4  # type: ignore[arg-type]
    _sync(writer, chunks[:2], vecs)
    snap = reader.snapshot()
    assert snap is not None and snap.generation == 2 and len(snap) == 2


def test_rank_lifts_exact_identifier_matches_and_merges_chunks_per_source(
    tmp_path: Path,
) -> None:
    chunks = [
        Chunk("product", "tent-green", 0, "Ridgeline Tent", "SKUs: NW-TNT-2P-GRN."),
        Chunk("product", "tent-orange", 0, "Ridgeline Tent", "SKUs: NW-TNT-2P-ORG."),
        Chunk("policy", "returns", 0, "Returns policy", "Return within 30 days."),
        Chunk("policy", "returns", 1, "Returns policy", "Refunds go to the card."),
    ]
    vectors = _vectors(4, seed=3)
    index = StoreIndex(tmp_path, 1, dim=DIM)
    with index.write_lock():
        index.apply(None, chunks, vectors, [])
    snap = index.snapshot()
    assert snap is not None
    # The query vector points at the green tent, but the query quotes the orange SKU.
    hits = rank(snap, "is NW-TNT-2P-ORG in stock", vectors[0], 4)
    assert hits[0].id == "tent-orange" and hits[0].score >= 0.9
    # Two chunks of one article come back as one hit, with the better chunk's snippet.
    hits = rank(snap, "refunds card", vectors[3], 4)
    assert [h.id for h in hits].count("returns") == 1
    assert hits[0].id == "returns" and hits[0].snippet == "Refunds go to the card."
    assert all(0.0 <= h.score <= 1.0 for h in hits)
