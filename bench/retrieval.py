"""Retrieval benchmark: quality on the labelled demo-store questions, and query latency.

Run:  python3 bench/retrieval.py [--quick] [--out bench/results/retrieval.json]

What it measures, all in one run:

1. Quality on ``bench/data/retrieval_questions.jsonl`` (shopper questions with the article
   or product that answers each) against the demo store, imported into a temporary data
   dir: recall@1, recall@5 and MRR@10 of the shipped hybrid ranking, and as baselines in
   the same run, dense-only (MiniLM + FAISS) and BM25-only. A small sweep of the fusion
   weights shows how they were chosen, with a two-fold check (weights picked on one half,
   scored on the other) so the tuning is not just fitting the set.
2. Latency of one query, embedding included (the uncached path), at the demo store's own
   size, at 1k chunks and at 100k chunks. The extra chunks are synthetic filler (see
   :func:`filler`): embedding 100k texts with MiniLM on 2 cores would take hours, so a few
   thousand generated catalogue sentences are embedded for real and the filler vectors are
   normalised random mixtures of two of those embeddings plus a little noise, with the
   text of the first one (plus words of the second) as the filler's lexical content. The
   baseline is the same hybrid search over an exact (brute-force) flat index of the same
   100k vectors; the HNSW index's dense top-10 agreement with it is reported too. The
   query embedding alone is also timed through ``SentenceTransformer.encode`` (the path the
   fast one replaced) on the same thread, as the embedding baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatbot.storage.db import Database  # noqa: E402
from knowledge_base.chunking import Chunk  # noqa: E402
from knowledge_base.demo import ensure_demo_store  # noqa: E402
from knowledge_base.embeddings import Embedder  # noqa: E402
from knowledge_base.index import HNSW_THRESHOLD, Snapshot, StoreIndex  # noqa: E402
from knowledge_base.retrieval import QueryThread, Retriever, Weights, rank  # noqa: E402

log = logging.getLogger("bench.retrieval")

QUESTIONS = ROOT / "bench" / "data" / "retrieval_questions.jsonl"
DEFAULT_OUT = ROOT / "bench" / "results" / "retrieval.json"


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# -- quality --------------------------------------------------------------------------


def dedupe(snapshot: Snapshot, scored: Sequence[tuple[int, float]], k: int) -> list[str]:
    """Source ids of the best ``k`` distinct sources from (faiss id, score) pairs."""
    seen: list[str] = []
    for fid, _ in sorted(scored, key=lambda item: -item[1]):
        row = snapshot.rows.get(fid)
        if row is not None and row.source_id not in seen:
            seen.append(row.source_id)
            if len(seen) == k:
                break
    return seen


def metrics(ranked: Sequence[Sequence[str]], questions: Sequence[dict[str, Any]]) -> dict:
    r1 = r5 = rr = 0.0
    for ids, question in zip(ranked, questions, strict=True):
        expected = set(question["expected"])
        positions = [i for i, sid in enumerate(ids[:10]) if sid in expected]
        if positions:
            r1 += positions[0] == 0
            r5 += positions[0] < 5
            rr += 1.0 / (positions[0] + 1)
    n = len(questions)
    return {"recall@1": round(r1 / n, 4), "recall@5": round(r5 / n, 4), "mrr@10": round(rr / n, 4),
            "n": n}


def evaluate(snapshot: Snapshot, questions: Sequence[dict[str, Any]],
             vectors: np.ndarray) -> dict[str, object]:
    """Hybrid (shipped weights), dense-only and BM25-only quality, plus a weight sweep."""
    from knowledge_base.lexical import tokenize

    texts = [str(q["q"]) for q in questions]

    def hybrid(weights: Weights) -> list[list[str]]:
        return [[h.id for h in rank(snapshot, t, v, 10, weights)]
                for t, v in zip(texts, vectors, strict=True)]

    shipped = hybrid(Weights())
    dense = [dedupe(snapshot, snapshot.dense(v, 50), 10) for v in vectors]
    lexical = [dedupe(snapshot, snapshot.bm25.top(tokenize(t), 50), 10) for t in texts]
    by_style: dict[str, dict] = {}
    for style in sorted({str(q["style"]) for q in questions}):
        idx = [i for i, q in enumerate(questions) if q["style"] == style]
        by_style[style] = metrics([shipped[i] for i in idx], [questions[i] for i in idx])

    sweep = []
    grid = [Weights(d, round(1 - d, 2), t) for d in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
            for t in (0.0, 0.05, 0.1, 0.15)]
    runs = {w: hybrid(w) for w in grid}
    for w, ranked in runs.items():
        sweep.append({**asdict(w), **metrics(ranked, questions)})
    # Two-fold check: pick the best weights on one half, score them on the other half.
    halves = [list(range(0, len(questions), 2)), list(range(1, len(questions), 2))]
    folds = []
    for tune, test in (halves, halves[::-1]):
        def score(w: Weights, idx: list[int] = tune) -> tuple[float, float]:
            m = metrics([runs[w][i] for i in idx], [questions[i] for i in idx])
            return (m["recall@5"], m["mrr@10"])
        best = max(grid, key=score)
        folds.append({"picked": asdict(best),
                      **metrics([runs[best][i] for i in test], [questions[i] for i in test])})
    return {
        "hybrid": metrics(shipped, questions),
        "hybrid_weights": asdict(Weights()),
        "dense_only": metrics(dense, questions),
        "bm25_only": metrics(lexical, questions),
        "hybrid_by_style": by_style,
        "two_fold_check": folds,
        "weight_sweep": sweep,
        "misses_at_5": [
            {"q": q["q"], "expected": q["expected"], "got": ids[:5]}
            for q, ids in zip(questions, shipped, strict=True)
            if not set(q["expected"]) & set(ids[:5])
        ],
    }


# -- filler ---------------------------------------------------------------------------

_ADJ = ("lightweight", "packable", "insulated", "waterproof", "breathable", "rugged", "classic",
        "stretchy", "recycled", "compact", "heavyweight", "windproof", "quick-drying", "cosy")
_MAT = ("nylon", "polyester", "merino", "cotton", "canvas", "leather", "fleece", "down",
        "aluminium", "steel", "titanium", "ripstop", "wool", "silicone")
_ITEM = ("jacket", "vest", "tent", "tarp", "pack", "duffel", "boot", "sandal", "sock", "glove",
         "hat", "mug", "stove", "lantern", "chair", "blanket", "pillow", "bottle", "shirt",
         "pants", "shorts", "hoodie", "sleeping bag", "pad", "cooler", "kit")
_USE = ("day hikes", "winter camping", "trail running", "city commutes", "river trips",
        "ski touring", "car camping", "backpacking", "travel", "the cabin", "fishing",
        "climbing", "picnics", "festivals")
_COLOR = ("black", "forest green", "slate", "rust", "sand", "navy", "ochre", "teal", "plum")
_NAMES = ("Aster", "Birch", "Cinder", "Delta", "Elk", "Fjord", "Granite", "Heron", "Iris",
          "Juniper", "Kestrel", "Larch", "Mesa", "Nimbus", "Osprey", "Pika", "Quill", "Rook",
          "Sierra", "Tundra", "Umber", "Vale", "Willow", "Yarrow", "Zephyr")


def filler_texts(n: int, seed: int = 7) -> list[str]:
    """Generated catalogue-like sentences (synthetic; no real store data)."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        name = f"{rng.choice(_NAMES)} {rng.randint(2, 90)}"
        texts.append(
            f"{name} {rng.choice(_ITEM)}. A {rng.choice(_ADJ)} {rng.choice(_MAT)} "
            f"{rng.choice(_ITEM)} for {rng.choice(_USE)}, {rng.randint(3, 60)} oz, in "
            f"{rng.choice(_COLOR)} or {rng.choice(_COLOR)}. SKU FX-{i:05d}-{rng.randint(10, 99)}."
        )
    return texts


def filler(embedder: Embedder, n: int, base: int, seed: int = 11) -> tuple[list[Chunk], np.ndarray]:
    """``n`` filler chunks: ``base`` real embeddings, mixed pairwise into ``n`` vectors."""
    texts = filler_texts(base)
    started = time.perf_counter()
    real = embedder.encode(texts, progress=sys.stderr.isatty())
    log.info("embedded %d filler sentences in %.1fs", base, time.perf_counter() - started)
    rng = np.random.default_rng(seed)
    first = rng.integers(0, base, size=n)
    second = rng.integers(0, base, size=n)
    mix = rng.uniform(0.55, 0.95, size=(n, 1)).astype(np.float32)
    vectors = mix * real[first] + (1 - mix) * real[second]
    vectors += rng.normal(scale=0.02, size=vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = [t.split() for t in texts]
    chunks = [
        Chunk("product", f"filler-{i}", 0, f"Filler {i}",
              texts[a] + " " + " ".join(words[b][:6]))
        for i, (a, b) in enumerate(zip(first.tolist(), second.tolist(), strict=True))
    ]
    return chunks, vectors.astype(np.float32)


# -- latency --------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def time_queries(search: Callable[[str], object], embed: Callable[[str], np.ndarray],
                 texts: Sequence[str], rounds: int,
                 embed_baseline: Callable[[str], object] | None = None) -> dict[str, float]:
    """Per-query wall time of embed + search (ms); also the two parts on their own, and
    the embedding through ``SentenceTransformer.encode`` as a baseline."""
    for text in texts[:10]:  # warm-up: allocator, faiss and torch first-call costs
        search(text)
    total: list[float] = []
    embed_ms: list[float] = []
    for _ in range(rounds):
        for text in texts:
            t0 = time.perf_counter()
            search(text)
            total.append((time.perf_counter() - t0) * 1000)
    for text in texts:
        t0 = time.perf_counter()
        embed(text)
        embed_ms.append((time.perf_counter() - t0) * 1000)
    base_ms: list[float] = []
    if embed_baseline is not None:
        for text in texts[:10]:
            embed_baseline(text)
        for text in texts:
            t0 = time.perf_counter()
            embed_baseline(text)
            base_ms.append((time.perf_counter() - t0) * 1000)
    extra = ({"embed_st_encode_p50_ms": round(pct(base_ms, 50), 2),
              "embed_st_encode_p95_ms": round(pct(base_ms, 95), 2)} if base_ms else {})
    return {
        "queries": len(total),
        "p50_ms": round(pct(total, 50), 2),
        "p95_ms": round(pct(total, 95), 2),
        "mean_ms": round(statistics.fmean(total), 2),
        "embed_p50_ms": round(pct(embed_ms, 50), 2),
        "embed_p95_ms": round(pct(embed_ms, 95), 2),
        **extra,
    }


def build_index(root: Path, store_id: int, chunks: list[Chunk], vectors: np.ndarray,
                hnsw_threshold: int) -> tuple[StoreIndex, Snapshot, float]:
    index = StoreIndex(root, store_id, hnsw_threshold=hnsw_threshold)
    started = time.perf_counter()
    with index.write_lock():
        snapshot = index.apply(None, chunks, vectors, [])
    return index, snapshot, time.perf_counter() - started


def latency(embedder: Embedder, index: StoreIndex, texts: Sequence[str], rounds: int
            ) -> dict[str, Any]:
    """Like ``Retriever.search``: check the index generation on disk (one SQLite read),
    embed (uncached: every timed query runs the model) and rank on the single-threaded
    query thread."""
    worker = QueryThread()
    snapshot = index.snapshot()
    assert snapshot is not None

    def search(text: str) -> object:
        current = index.snapshot()
        assert current is not None
        return worker.run(lambda: rank(current, text, embedder.encode_query_uncached(text), 5))

    def embed(text: str) -> np.ndarray:
        return worker.run(lambda: embedder.encode_query_uncached(text))

    model = embedder.load()._ensure_model()

    def embed_baseline(text: str) -> object:  # the sentence-transformers path, same thread
        return worker.run(lambda: model.encode([text], normalize_embeddings=True,
                                                show_progress_bar=False))

    try:
        return {"chunks": len(snapshot), "index": snapshot.index_type,
                **time_queries(search, embed, texts, rounds, embed_baseline)}
    finally:
        worker.close()


# -- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--chunks", type=int, default=100_000, help="size of the big index")
    parser.add_argument("--filler-base", type=int, default=3000,
                        help="filler sentences embedded for real")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the questions")
    parser.add_argument("--hnsw-threshold", type=int, default=HNSW_THRESHOLD,
                        help="index size from which StoreIndex switches to HNSW")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 10k chunks, HNSW from 5k, 500 filler sentences")
    args = parser.parse_args(argv)
    if args.quick:
        args.chunks, args.filler_base, args.hnsw_threshold = 10_000, 500, 5_000
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("alembic", "sentence_transformers", "faiss", "knowledge_base.importers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    result: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "load_avg_start": os.getloadavg()},
    }
    questions = load_questions()
    texts = [str(q["q"]) for q in questions]
    embedder = Embedder().load()
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        tmpdir = Path(tmp)
        db = Database(f"sqlite:///{tmpdir / 'bench.db'}")
        store = ensure_demo_store(db)
        retriever = Retriever(db, tmpdir / "indexes", embedder)
        stats = retriever.sync(store.id)
        log.info("demo store index: %d chunks, built in %.1fs", stats.total, stats.seconds)
        result["demo_index"] = {"chunks": stats.total, "build_s": round(stats.seconds, 2)}
        demo = retriever.store_index(store.id).snapshot()
        assert demo is not None

        vectors = np.stack([embedder.encode_query_uncached(t) for t in texts])
        quality = evaluate(demo, questions, vectors)
        result["quality"] = quality
        log.info("quality: hybrid %s | dense %s | bm25 %s", quality["hybrid"],
                 quality["dense_only"], quality["bm25_only"])

        lat: dict[str, object] = {
            "demo": latency(embedder, retriever.store_index(store.id), texts, args.rounds)
        }
        log.info("latency demo: %s", lat["demo"])
        demo_ids = sorted(demo.rows)
        demo_chunks = [Chunk(r.kind, r.source_id, r.chunk_no, r.title, r.text, r.url, r.heading)
                       for r in (demo.rows[i] for i in demo_ids)]
        demo_vectors = demo.vectors(demo_ids)
        fill_chunks, fill_vectors = filler(embedder, args.chunks - len(demo_chunks),
                                           args.filler_base)
        for label, size in (("1k", 1000), ("big", args.chunks)):
            extra = size - len(demo_chunks)
            chunks = demo_chunks + fill_chunks[:extra]
            vecs = np.concatenate([demo_vectors, fill_vectors[:extra]])
            big, snap, build_s = build_index(tmpdir / f"idx-{label}", 1, chunks, vecs,
                                             args.hnsw_threshold)
            lat[label] = {**latency(embedder, big, texts, args.rounds),
                          "build_s": round(build_s, 1)}
            log.info("latency %s: %s", label, lat[label])
            if label == "big":
                flat_index, flat, flat_build = build_index(tmpdir / "idx-flat", 1, chunks, vecs,
                                                           10**9)
                lat["big_bruteforce_baseline"] = {
                    **latency(embedder, flat_index, texts, args.rounds),
                    "build_s": round(flat_build, 1),
                }
                log.info("latency brute force: %s", lat["big_bruteforce_baseline"])
                agree = [
                    len({i for i, _ in snap.dense(v, 10)} & {i for i, _ in flat.dense(v, 10)}) / 10
                    for v in vectors
                ]
                lat["hnsw_dense_top10_agreement_with_exact"] = round(statistics.fmean(agree), 4)
                result["quality_with_filler"] = {
                    "hnsw": metrics([[h.id for h in rank(snap, t, v, 10)]
                                     for t, v in zip(texts, vectors, strict=True)], questions),
                    "exact": metrics([[h.id for h in rank(flat, t, v, 10)]
                                      for t, v in zip(texts, vectors, strict=True)], questions),
                }
                flat_index.close()
                del flat
            big.close()
            del snap
        result["latency"] = lat
        db.dispose()
    result["filler"] = (
        f"{args.chunks - len(demo_chunks)} synthetic chunks: {args.filler_base} generated "
        "catalogue sentences embedded with MiniLM, then each filler vector = normalise(a*e_i + "
        "(1-a)*e_j + N(0, 0.02)) with a in [0.55, 0.95]; filler text = sentence i + 6 words of j"
    )
    result["targets"] = {"recall@5": 0.90, "p95_ms_at_100k": 20.0}
    result["machine"]["load_avg_end"] = os.getloadavg()  # type: ignore[index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _report(result)
    return 0


def _report(result: dict) -> None:
    q = result["quality"]
    print("\nRetrieval quality on", q["hybrid"]["n"], "labelled demo-store questions")
    print(f"  {'':<22}{'recall@1':>10}{'recall@5':>10}{'MRR@10':>10}")
    for name in ("hybrid", "dense_only", "bm25_only"):
        m = q[name]
        print(f"  {name:<22}{m['recall@1']:>10.3f}{m['recall@5']:>10.3f}{m['mrr@10']:>10.3f}")
    for fold in q["two_fold_check"]:
        print(f"  two-fold: weights {fold['picked']} tuned on the other half -> recall@5 "
              f"{fold['recall@5']:.3f}, MRR {fold['mrr@10']:.3f}")
    if "quality_with_filler" in result:
        m = result["quality_with_filler"]["hnsw"]
        print(f"  with {result['latency']['big']['chunks']:,} chunks (filler, HNSW): "
              f"recall@5 {m['recall@5']:.3f}, MRR {m['mrr@10']:.3f}")
    print("\nQuery latency (embedding + hybrid search), ms")
    print(f"  {'':<26}{'chunks':>9}{'index':>7}{'p50':>8}{'p95':>8}{'embed p50':>11}"
          f"{'ST.encode p50':>15}")
    for name, m in result["latency"].items():
        if isinstance(m, dict):
            print(f"  {name:<26}{m['chunks']:>9,}{m['index']:>7}{m['p50_ms']:>8.2f}"
                  f"{m['p95_ms']:>8.2f}{m['embed_p50_ms']:>11.2f}"
                  f"{m.get('embed_st_encode_p50_ms', float('nan')):>15.2f}")
    print(f"  HNSW dense top-10 agreement with exact search: "
          f"{result['latency'].get('hnsw_dense_top10_agreement_with_exact')}")
    print(f"\nFiller: {result['filler']}")
    print(f"Machine: {result['machine']}")


if __name__ == "__main__":
    raise SystemExit(main())
