"""One FAISS index per store on disk, with a persisted mapping back to the chunks.

Layout, next to the database under ``Settings.index_dir``::

    store-<id>/
        chunks.sqlite          the sidecar: meta (generation, index file, next id),
                               one row per live chunk (faiss id -> kind, source id,
                               chunk no, content hash, title, text, url), dead ids
        vectors-<gen>.faiss    IndexIDMap2 over IndexFlatIP (small stores) or HNSW
        write.lock             flock'd by the one process that writes

Crash safety: a write puts the new vectors into ``vectors-<gen+1>.faiss`` (temp file,
fsync, rename), then switches to it in a single SQLite transaction that also updates
the mapping. Until that commit every reader keeps using the previous generation, whose
file is only deleted afterwards; a crash at any point leaves a consistent pair.

Readers in other processes notice a new generation with one tiny SQLite read per search
and reload. Faiss ids are never reused (``next_id`` only grows), so a stale reader can
never map an id to the wrong chunk.

Removing a chunk marks its id dead (an ``IDSelector`` hides it from searches) instead of
editing the HNSW graph, which faiss cannot do; the index is rebuilt from the live vectors
when the dead outnumber a fifth of the live ones. Small stores use exact search; past
``hnsw_threshold`` chunks the index is rebuilt as HNSW (see ``bench/retrieval.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from chatbot.errors import ChatbotError
from knowledge_base.chunking import Chunk, ChunkKey
from knowledge_base.lexical import BM25, tokenize

log = logging.getLogger(__name__)

SIDECAR = "chunks.sqlite"
LOCK_FILE = "write.lock"
HNSW_THRESHOLD = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96
COMPACT_DEAD_FRACTION = 0.2
COMPACT_DEAD_MIN = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    faiss_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    source_id TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    title TEXT NOT NULL,
    heading TEXT NOT NULL,
    text TEXT NOT NULL,
    url TEXT NOT NULL,
    UNIQUE (kind, source_id, chunk_no)
);
CREATE TABLE IF NOT EXISTS dead (faiss_id INTEGER PRIMARY KEY);
"""


class IndexCorruptError(ChatbotError):
    """The files of a store's index disagree with each other; rebuild the index."""

    code = "index_corrupt"


@dataclass(frozen=True)
class IndexedChunk:
    """A chunk as stored in the index: its faiss id and everything a hit shows."""

    faiss_id: int
    kind: str
    source_id: str
    chunk_no: int
    content_hash: str
    title: str
    heading: str
    text: str
    url: str

    @property
    def key(self) -> ChunkKey:
        return (self.kind, self.source_id, self.chunk_no)

    @property
    def embed_text(self) -> str:
        return Chunk(self.kind, self.source_id, self.chunk_no, self.title, self.text,
                     self.url, self.heading).embed_text


@dataclass
class Snapshot:
    """An immutable, consistent view of one generation of a store's index."""

    generation: int
    index: faiss.Index
    index_type: str
    rows: dict[int, IndexedChunk]
    dead: np.ndarray
    next_id: int
    by_key: dict[ChunkKey, IndexedChunk] = field(init=False)
    bm25: BM25 = field(init=False)

    def __post_init__(self) -> None:
        self.by_key = {row.key: row for row in self.rows.values()}
        self.bm25 = BM25((fid, tokenize(row.embed_text)) for fid, row in self.rows.items())
        self._selector = (
            faiss.IDSelectorNot(faiss.IDSelectorBatch(self.dead)) if len(self.dead) else None
        )

    def __len__(self) -> int:
        return len(self.rows)

    def dense(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """The ``n`` nearest live chunks to a normalised vector: (faiss id, cosine)."""
        if not self.rows or n <= 0:
            return []
        n = min(n, len(self.rows))
        if self.index_type == "hnsw":
            params: faiss.SearchParameters = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                efSearch=max(HNSW_EF_SEARCH, n)
            )
        else:
            params = faiss.SearchParameters()
        if self._selector is not None:
            params.sel = self._selector
        scores, ids = self.index.search(vector.reshape(1, -1), n, params=params)
        return [
            (int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True)
            if i >= 0 and int(i) in self.rows
        ]

    def vector(self, faiss_id: int) -> np.ndarray:
        return np.asarray(self.index.reconstruct(int(faiss_id)), dtype=np.float32)

    def vectors(self, faiss_ids: Sequence[int]) -> np.ndarray:
        if not faiss_ids:
            return np.zeros((0, self.index.d), dtype=np.float32)
        return np.stack([self.vector(i) for i in faiss_ids])


@dataclass(frozen=True)
class SyncPlan:
    """What an incremental sync must do to make the index match a set of chunks."""

    to_embed: list[Chunk]
    remove_ids: list[int]
    added: int
    updated: int
    removed: int
    unchanged: int


def plan_sync(snapshot: Snapshot | None, chunks: Sequence[Chunk]) -> SyncPlan:
    """Compare content hashes: only new or changed chunks are embedded."""
    current = snapshot.by_key if snapshot is not None else {}
    wanted = {chunk.key: chunk for chunk in chunks}
    to_embed: list[Chunk] = []
    remove_ids: list[int] = []
    added = updated = unchanged = 0
    for key, chunk in wanted.items():
        row = current.get(key)
        if row is None:
            added += 1
            to_embed.append(chunk)
        elif row.content_hash != chunk.content_hash:
            updated += 1
            to_embed.append(chunk)
            remove_ids.append(row.faiss_id)
        else:
            unchanged += 1
    gone = [row.faiss_id for key, row in current.items() if key not in wanted]
    remove_ids.extend(gone)
    return SyncPlan(to_embed, remove_ids, added, updated, len(gone), unchanged)


def _new_index(index_type: str, dim: int) -> faiss.Index:
    inner: faiss.Index
    if index_type == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        inner = faiss.IndexFlatIP(dim)
    return faiss.IndexIDMap2(inner)


class StoreIndex:
    """The on-disk index of one store; cheap to create, loads lazily, reloads when stale."""

    def __init__(self, root: Path, store_id: int, *, dim: int = 384,
                 hnsw_threshold: int = HNSW_THRESHOLD) -> None:
        self.store_id = store_id
        self.directory = Path(root) / f"store-{store_id}"
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self._snapshot: Snapshot | None = None
        self._conn: sqlite3.Connection | None = None
        # Guards the read connection and the current snapshot; never held while embedding.
        self._lock = threading.RLock()
        # One writer per store in this process (flock covers other processes).
        self._write_mutex = threading.Lock()

    # -- reading -------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.directory.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.directory / SIDECAR, timeout=30, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        return conn

    def _connect(self) -> sqlite3.Connection:
        """The read connection (callers hold ``self._lock``)."""
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._snapshot = None

    def exists(self) -> bool:
        """True once a first sync has written the index."""
        if self._conn is None and not (self.directory / SIDECAR).exists():
            return False
        return self._disk_generation() is not None

    def _disk_generation(self) -> int | None:
        with self._lock:
            row = self._connect().execute(
                "SELECT value FROM meta WHERE key = 'generation'"
            ).fetchone()
        return int(row[0]) if row else None

    def snapshot(self) -> Snapshot | None:
        """The newest committed generation (``None`` before the first sync)."""
        if self._conn is None and not (self.directory / SIDECAR).exists():
            return None
        generation = self._disk_generation()
        with self._lock:
            if generation is None:
                return None
            if self._snapshot is None or self._snapshot.generation != generation:
                self._snapshot = self._load()
            return self._snapshot

    def _load(self) -> Snapshot:
        conn = self._connect()
        for attempt in range(5):
            conn.execute("BEGIN")
            try:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                rows = {
                    r[0]: IndexedChunk(*r)
                    for r in conn.execute(
                        "SELECT faiss_id, kind, source_id, chunk_no, content_hash, title, "
                        "heading, text, url FROM chunks"
                    )
                }
                dead = np.fromiter(
                    (r[0] for r in conn.execute("SELECT faiss_id FROM dead")), dtype=np.int64
                )
            finally:
                conn.execute("COMMIT")
            self._check_meta(meta)
            path = self.directory / meta["faiss_file"]
            try:
                index = faiss.read_index(str(path))
            except RuntimeError:
                # A writer may have switched generations and deleted this file between
                # our meta read and the open: read the meta again.
                if path.exists() or attempt == 4:
                    raise IndexCorruptError(
                        f"index file {path} of store {self.store_id} cannot be read"
                    ) from None
                continue
            if index.ntotal != len(rows) + len(dead) or index.d != self.dim:
                raise IndexCorruptError(
                    f"index of store {self.store_id} holds {index.ntotal} vectors but its "
                    f"mapping has {len(rows)} live and {len(dead)} dead rows"
                )
            log.debug("loaded index of store %s generation %s (%d chunks)",
                      self.store_id, meta["generation"], len(rows))
            return Snapshot(int(meta["generation"]), index, meta["index_type"], rows, dead,
                            int(meta["next_id"]))
        raise IndexCorruptError(f"index of store {self.store_id} keeps changing under us")

    def _check_meta(self, meta: dict[str, str]) -> None:
        if int(meta.get("store_id", -1)) != self.store_id:
            raise IndexCorruptError(
                f"{self.directory} belongs to store {meta.get('store_id')}, not {self.store_id}"
            )
        if int(meta.get("dim", -1)) != self.dim:
            raise IndexCorruptError(f"{self.directory} holds {meta.get('dim')}-d vectors")

    # -- writing -------------------------------------------------------------------

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Exclusive across processes (flock) and threads: one writer per store."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._write_mutex, open(self.directory / LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def apply(self, base: Snapshot | None, chunks: Sequence[Chunk], vectors: np.ndarray,
              remove_ids: Sequence[int]) -> Snapshot:
        """Add ``chunks`` (with their vectors) and drop ``remove_ids``; hold :meth:`write_lock`.

        ``base`` must be the current generation, read under the same lock.
        """
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        generation = base.generation + 1 if base else 1
        next_id = base.next_id if base else 1
        new_ids = np.arange(next_id, next_id + len(chunks), dtype=np.int64)
        removed = set(int(i) for i in remove_ids)
        live_old = [fid for fid in (base.rows if base else {}) if fid not in removed]
        live = len(live_old) + len(chunks)
        old_dead = base.dead if base is not None else np.zeros(0, dtype=np.int64)
        dead_after = len(old_dead) + len(removed)
        index_type = "hnsw" if live >= self.hnsw_threshold else "flat"
        rebuild = (
            base is None
            or index_type != base.index_type
            or dead_after > max(COMPACT_DEAD_MIN, COMPACT_DEAD_FRACTION * live)
        )
        if rebuild:
            index = _new_index(index_type, self.dim)
            if live_old:
                assert base is not None
                index.add_with_ids(base.vectors(live_old), np.asarray(live_old, dtype=np.int64))
            dead = np.zeros(0, dtype=np.int64)
        else:
            assert base is not None
            # Readers in this process may be searching the current index: never mutate it.
            index = faiss.clone_index(base.index)
            dead = np.concatenate([old_dead, np.asarray(sorted(removed), dtype=np.int64)])
        if len(chunks):
            index.add_with_ids(vectors, new_ids)
        faiss_file = f"vectors-{generation}.faiss"
        self._write_index_file(index, faiss_file)
        rows = dict(base.rows) if base else {}
        for fid in removed:
            rows.pop(fid, None)
        new_rows = [
            IndexedChunk(int(fid), c.kind, c.source_id, c.chunk_no, c.content_hash, c.title,
                         c.heading, c.text, c.url)
            for fid, c in zip(new_ids, chunks, strict=True)
        ]
        rows.update((row.faiss_id, row) for row in new_rows)
        self._commit(generation, faiss_file, index_type, next_id + len(chunks), removed,
                     new_rows, dead if not rebuild else None)
        self._remove_old_files(faiss_file)
        snapshot = Snapshot(generation, index, index_type, rows, dead, next_id + len(chunks))
        with self._lock:
            self._snapshot = snapshot
        log.info(
            "store %s index generation %d: %d chunks (+%d, -%d, %s%s)", self.store_id,
            generation, len(rows), len(chunks), len(removed), index_type,
            ", rebuilt" if rebuild else "",
        )
        return snapshot

    def _write_index_file(self, index: faiss.Index, name: str) -> None:
        final = self.directory / name
        temp = self.directory / f".{name}.tmp"
        faiss.write_index(index, str(temp))
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _commit(self, generation: int, faiss_file: str, index_type: str, next_id: int,
                removed: set[int], new_rows: Sequence[IndexedChunk],
                dead: np.ndarray | None) -> None:
        conn = self._open()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("DELETE FROM chunks WHERE faiss_id = ?", [(i,) for i in removed])
            conn.executemany(
                "INSERT INTO chunks (faiss_id, kind, source_id, chunk_no, content_hash, title, "
                "heading, text, url) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.faiss_id, r.kind, r.source_id, r.chunk_no, r.content_hash, r.title,
                  r.heading, r.text, r.url) for r in new_rows],
            )
            if dead is None:
                conn.execute("DELETE FROM dead")
            else:
                conn.executemany("INSERT OR IGNORE INTO dead (faiss_id) VALUES (?)",
                                 [(i,) for i in removed])
            meta = {
                "store_id": str(self.store_id), "dim": str(self.dim),
                "generation": str(generation), "faiss_file": faiss_file,
                "index_type": index_type, "next_id": str(next_id),
            }
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             list(meta.items()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            (self.directory / faiss_file).unlink(missing_ok=True)
            raise
        finally:
            conn.close()

    def _remove_old_files(self, current: str) -> None:
        for path in self.directory.glob("vectors-*.faiss"):
            if path.name != current:
                path.unlink(missing_ok=True)
        for path in self.directory.glob(".vectors-*.tmp"):
            path.unlink(missing_ok=True)

    def destroy(self) -> None:
        """Delete this store's index from disk (the next sync rebuilds it). Hold the lock."""
        self.close()
        for path in self.directory.glob("*"):
            if path.name != LOCK_FILE:
                path.unlink(missing_ok=True)
