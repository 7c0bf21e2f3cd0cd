"""A compact Llama forward pass over a flat batch of tokens, with a slot-based KV cache.

Built bottom-up like nanoGPT: config, weights, RMSNorm/RoPE helpers, the KV cache, then
one ``forward`` that runs decode rows and prefill chunks of different sequences through
the same weight matmuls (one pass over the weights per scheduler step).

Layout decisions, each for speed on a small CPU:
- q/k/v and gate/up projections are fused into one matrix each (fewer, larger matmuls).
- The KV cache keeps the *decoding* sequences in slots ``0..n_decode-1`` so attention
  reads one strided view of the cache instead of gathering (copying) rows every step.
  The scheduler maintains that invariant with :meth:`KVCache.move`.
- Logits are computed only for the rows that need them (the last token of a sequence),
  because the tied 49152 x 576 head is a fifth of all weights.
- GQA without repeating K/V: the query heads are grouped per KV head and attend in one
  batched matmul.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from chatbot.engine import native
from chatbot.engine.formats import WeightFormat
from chatbot.engine.linear import NATIVE_DECODE_ROWS, Q4_DECODE_ROWS, Linear, LoRA
from chatbot.engine.native import NativeDecoder, Q4Kernel
from chatbot.errors import ConfigError

log = logging.getLogger(__name__)

# While at most this many sequences decode, their rows attend one by one (no mask, no
# gathered batch); more go through one masked batched attention.
FEW_DECODE_ROWS = 2


@dataclass(frozen=True)
class ModelConfig:
    """The few Llama hyper-parameters the forward pass needs."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    max_positions: int
    tie_embeddings: bool
    eos_token_ids: tuple[int, ...] = ()

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Read a Hugging Face ``config.json`` dict (Llama family only)."""
        if cfg.get("model_type") not in ("llama", "mistral", "qwen2"):
            raise ConfigError(f"unsupported model type {cfg.get('model_type')!r}: need a Llama")
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
            raise ConfigError(f"unsupported RoPE scaling {rope!r}")
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            raise ConfigError("Llama variants with biases are not supported")
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        heads = int(cfg["num_attention_heads"])
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            rope_theta=float(rope.get("rope_theta") or cfg.get("rope_theta") or 10000.0),
            max_positions=int(cfg.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            eos_token_ids=eos_ids,
        )


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama RMSNorm, computed in fp32 (x: [N, hidden]); one fused kernel."""
    return F.rms_norm(x, weight.shape, weight, eps)


def rope_tables(head_dim: int, theta: float, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for positions ``0..length-1``, each [length, head_dim]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)  # [L, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [L, hd]
    return emb.cos().float(), emb.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [N, heads, hd] by per-token tables cos/sin [N, 1, hd] (HF half-split)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


# Shortest shared prefix worth its own attention pass (below it the per-slot pass is as fast).
MIN_SHARED_PREFIX = 32


def shared_prefix_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    prefix: int,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Decode attention for a batch whose sequences start with the same ``prefix`` tokens.

    q: [B, nkv, rep, hd]; keys/values: [B, nkv, L, hd] (slots 0..B-1 of the cache, L the
    longest sequence); mask: [B, 1, 1, L], True where a row may look. The prefix's
    keys/values are read once, from slot 0, for all B rows (one matmul with B * rep rows per
    kv head) instead of B times; each row's own suffix is a second, short pass; the two
    softmax parts are merged with their max and sum (as flash attention merges blocks).
    With a long system prompt this is most of the bytes a batched decode step reads.
    Equal tokens at equal positions have equal keys up to rounding, so rows match the
    per-slot pass to fp32 rounding. Scores and the softmax are fp32 whatever the cache's
    dtype.
    """
    b, nkv, rep, hd = q.shape
    scale = hd**-0.5
    # prefix: [nkv, B * rep, hd] @ [nkv, hd, P]
    qp = q.transpose(0, 1).reshape(nkv, b * rep, hd)
    s1 = torch.matmul(qp, keys[0, :, :prefix].transpose(-1, -2)).float().mul_(scale)
    m1 = s1.amax(-1, keepdim=True)
    e1 = s1.sub_(m1).exp_()
    l1 = e1.sum(-1, keepdim=True)
    o1 = torch.matmul(e1.to(values.dtype), values[0, :, :prefix]).float()  # [nkv, B * rep, hd]
    # suffix: each row's own keys after the prefix
    s2 = torch.matmul(q, keys[:, :, prefix:].transpose(-1, -2)).float().mul_(scale)  # [B,nkv,rep,S]
    s2 = s2.masked_fill_(~mask[..., prefix:], float("-inf"))
    m2 = s2.amax(-1, keepdim=True)
    e2 = s2.sub_(m2).exp_()
    l2 = e2.sum(-1, keepdim=True)
    o2 = torch.matmul(e2.to(values.dtype), values[:, :, prefix:]).float()  # [B, nkv, rep, hd]

    def rows(t: torch.Tensor) -> torch.Tensor:  # [nkv, B * rep, x] -> [B, nkv, rep, x]
        return t.view(nkv, b, rep, -1).transpose(0, 1)

    m1, l1, o1 = rows(m1), rows(l1), rows(o1)
    m = torch.maximum(m1, m2)
    w1, w2 = (m1 - m).exp_(), (m2 - m).exp_()
    return (o1 * w1 + o2 * w2) / (l1 * w1 + l2 * w2)


def fuse_lora(parts: list[LoRA | None], out_sizes: list[int]) -> LoRA | None:
    """One LoRA pair for weights stacked along the output dimension (fused q/k/v, gate/up).

    The A matrices stack; B becomes block-diagonal, so ``B @ A`` is the stacked deltas.
    """
    present = [p for p in parts if p is not None]
    if not present:
        return None
    a = torch.cat([p[0] for p in present], dim=0)
    b = torch.zeros(sum(out_sizes), a.shape[0])
    row = col = 0
    for part, n_out in zip(parts, out_sizes, strict=True):
        if part is not None:
            rank = part[0].shape[0]
            b[row : row + n_out, col : col + rank] = part[1]
            col += rank
        row += n_out
    return a, b


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # [hidden]
    qkv: Linear  # [(heads + 2 * kv_heads) * hd, hidden]
    o: Linear  # [hidden, heads * hd]
    mlp_norm: torch.Tensor  # [hidden]
    gate_up: Linear  # [2 * intermediate, hidden]
    down: Linear  # [hidden, intermediate]


class KVCache:
    """Preallocated keys/values: ``[layers, slots, kv_heads, capacity, head_dim]`` each.

    Slots (doubling) and capacity (by whole chunks) grow on demand, so an idle server holds
    a small cache and a busy one grows up to ``max_slots`` x ``max_len``.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        max_slots: int,
        max_len: int,
        len_chunk: int = 256,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.config = config
        self.dtype = dtype
        self.max_slots = max_slots
        self.max_len = max_len
        self.len_chunk = len_chunk
        self.k = torch.zeros(0, dtype=dtype)
        self.v = torch.zeros(0, dtype=dtype)
        self.slots = 0
        self.capacity = 0
        self.reserve(1, min(len_chunk, max_len))

    @property
    def bytes_per_token(self) -> int:
        c = self.config
        return 2 * c.n_layers * c.n_kv_heads * c.head_dim * self.dtype.itemsize

    def reserve(self, slots: int, length: int) -> None:
        """Make room for ``slots`` sequences of ``length`` tokens (grows, never shrinks)."""
        if slots > self.max_slots or length > self.max_len:
            raise ConfigError(
                f"KV cache request {slots} slots x {length} tokens exceeds "
                f"{self.max_slots} x {self.max_len}"
            )
        if slots <= self.slots and length <= self.capacity:
            return
        # Slots double (every growth reallocates and copies the whole cache: growing one
        # slot at a time cost 2 s when 16 conversations arrived together).
        new_slots = self.slots if slots <= self.slots else max(slots, 2 * self.slots)
        new_slots = min(new_slots, self.max_slots)
        new_cap = max(
            self.capacity, min(self.max_len, -(-length // self.len_chunk) * self.len_chunk)
        )
        c = self.config
        shape = (c.n_layers, new_slots, c.n_kv_heads, new_cap, c.head_dim)
        k, v = torch.zeros(shape, dtype=self.dtype), torch.zeros(shape, dtype=self.dtype)
        if self.slots and self.capacity:
            k[:, : self.slots, :, : self.capacity] = self.k
            v[:, : self.slots, :, : self.capacity] = self.v
        self.k, self.v = k, v
        self.slots, self.capacity = new_slots, new_cap
        log.debug("KV cache grown to %d slots x %d tokens", new_slots, new_cap)

    def shrink(self) -> None:
        """Drop the cache back to its initial size (when no sequence is active)."""
        self.k = self.v = torch.zeros(0, dtype=self.dtype)
        self.slots = self.capacity = 0
        self.reserve(1, min(self.len_chunk, self.max_len))

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` into slot ``dst``."""
        if src != dst and length:
            self.k[:, dst, :, :length] = self.k[:, src, :, :length]
            self.v[:, dst, :, :length] = self.v[:, src, :, :length]

    def swap(self, a: int, b: int, length: int) -> None:
        """Exchange the first ``length`` positions of two slots."""
        if a != b and length:
            for t in (self.k, self.v):
                tmp = t[:, a, :, :length].clone()
                t[:, a, :, :length] = t[:, b, :, :length]
                t[:, b, :, :length] = tmp

    def read(self, slot: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of one slot's first ``length`` positions: [layers, kv_heads, length, hd] x2."""
        return self.k[:, slot, :, :length].clone(), self.v[:, slot, :, :length].clone()

    def write(self, slot: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Put saved keys/values (from :meth:`read`) at the start of ``slot``."""
        length = k.shape[2]
        self.k[:, slot, :, :length] = k
        self.v[:, slot, :, :length] = v


@dataclass
class Prefill:
    """One prompt chunk in a step: ``length`` tokens of ``slot`` starting at ``start``."""

    slot: int
    start: int
    length: int


@dataclass(frozen=True)
class Kernels:
    """How one step runs (:func:`choose_kernels` picks it; ``Llama.forward`` follows it)."""

    # how many leading decode rows read the 4-bit weights (q4 only; the rest: the bf16 copy)
    q4_rows: int = 0
    # those rows go through the native step (every layer in one C call); prompt chunks
    # still go through torch
    native_decode: bool = False
    # OpenMP threads for the step (0: leave torch's setting)
    threads: int = 0
    # ... and for its prompt pieces with batch invariance (0: the step's; see piece_threads)
    piece_threads: int = 0


# With batch invariance, a prompt is computed in pieces of at most this many tokens (see
# prompt_piece_end, Llama.forward and Scheduler._plan): the same prompt, the same computations.
PREFILL_ALIGN = 64
# ... on this many threads (see Llama.forward)
PIECE_THREADS = 1
# Pieces in one pass: every matmul gets at least this many rows (see Llama._hidden)
PIECE_MIN_ROWS = 16


def system_prompt_end(tokens: Sequence[int], segment_ends: Set[int]) -> int:
    """The position after the first segment-end token (the chat template's end of message,
    ``<|im_end|>``: the end of the store's system prompt), 0 when there is none."""
    return next((i + 1 for i, t in enumerate(tokens) if t in segment_ends), 0)


def prompt_piece_end(start: int, end: int, system_end: int) -> int:
    """Where the prompt piece that starts at ``start`` ends (at most ``end``).

    Pieces are PREFILL_ALIGN tokens long, except that the end of the system prompt
    (``system_end``, from :func:`system_prompt_end`) also ends one, so the shopper's part
    starts a piece. Where a piece ends depends only on the tokens before that point, so
    two prompts that share a prefix cut it into the same pieces: a prefix-cache hit can
    be reused up to any piece end within it (the whole system prompt, not only its first
    multiple of 64 tokens) and the rest is computed as it would be without the cache.
    (Later message ends do not end a piece: a short piece costs a whole pass over the
    weights, ~20 ms on one core.)
    """
    stop = min(start + PREFILL_ALIGN, end)
    return system_end if start < system_end < stop else stop


def prompt_piece_floor(n: int, length: int, system_end: int) -> int:
    """The last piece end at or before ``n`` of a prompt of ``length`` tokens (0 when the
    first piece is longer)."""
    at = 0
    while at < n:
        nxt = prompt_piece_end(at, length, system_end)
        if nxt > n:
            break
        at = nxt
    return at


@dataclass
class StepPlan:
    """How the flat token list of one forward pass maps onto sequences.

    The first ``len(decode_positions)`` tokens are decode rows: row ``b`` is one token of
    slot ``decode_slots[b]`` (default: slot ``b``) at position ``decode_positions[b]``. A
    slot may have several consecutive rows (a draft being verified); each row then sees the
    rows of its slot before it. The rest are the prefill chunks, in order. ``logit_rows``
    picks the flat rows whose next-token logits are wanted.
    """

    decode_positions: list[int] = field(default_factory=list)
    decode_slots: list[int] = field(default_factory=list)
    prefills: list[Prefill] = field(default_factory=list)
    logit_rows: list[int] = field(default_factory=list)
    # Cache positions 0..shared_prefix-1 hold the same tokens in every decode slot (a
    # store's system prompt): batched decode rows then read those keys/values once, from
    # slot 0, instead of once per sequence (see :func:`shared_prefix_attention`).
    shared_prefix: int = 0
    # the kernels for this step; None: ``Llama.forward`` picks them (:func:`choose_kernels`)
    kernels: Kernels | None = None

    @property
    def n_sequences(self) -> int:
        """How many sequences the decode rows belong to (drafted rows share a slot)."""
        n_dec = len(self.decode_positions)
        return len(set(self.decode_slots)) if self.decode_slots else n_dec

    @property
    def n_tokens(self) -> int:
        return len(self.decode_positions) + sum(pf.length for pf in self.prefills)


def choose_kernels(model: Any, plan: StepPlan, k_cache: torch.Tensor, threads: int = 0) -> Kernels:
    """The kernels for ``plan`` on ``model`` (its ``format`` and ``native_decoder``).

    With the native kernel, every decode row runs through it, however many sequences
    decode (in calls of at most ``max_rows`` rows): its rows are exact and independent of
    the rows beside them, so a reply never depends on the batch it happens to run in
    (issue #16, "Stable answers"; the bf16 copy would be faster past about six sequences,
    but its numbers change with the batch). Without it, torch's int4 kernel reads 4-bit
    weights only while few sequences decode, and the bf16 copy serves the rest.
    """
    if getattr(model, "format", None) != "q4":
        return Kernels(threads=threads)
    n_dec = len(plan.decode_positions)
    dec: NativeDecoder | None = getattr(model, "native_decoder", None)
    invariant = getattr(model, "batch_invariant", True)
    if dec is not None and plan.n_tokens > 0 and dec.supports(k_cache):
        if invariant:
            return Kernels(q4_rows=n_dec, native_decode=True, threads=threads,
                           piece_threads=piece_threads(model, plan))
        if 0 < plan.n_sequences <= NATIVE_DECODE_ROWS and n_dec <= dec.max_rows:
            return Kernels(q4_rows=n_dec, native_decode=True, threads=threads)
        return Kernels(threads=threads)  # many sequences: the bf16 copy (faster, not exact)
    q4_rows = n_dec if plan.n_sequences <= Q4_DECODE_ROWS else 0
    return Kernels(q4_rows=q4_rows, threads=threads)


def piece_threads(model: Any, plan: StepPlan) -> int:
    """The threads for ``plan``'s prompt pieces with batch invariance (0: none to run).

    One piece alone: its ~600 small ops run faster on one thread (PIECE_THREADS) than on
    two whose OpenMP worker sleeps between ops (OMP_WAIT_POLICY=PASSIVE): cold first token
    0.72-1.03 -> 0.49-0.65 s for a 319-token prompt on the 2-core Zen 5 (bench/engine.py
    prompt), and the other core stays free. Several pieces in one pass make big matmuls:
    those run on the model's ``piece_threads`` (all threads where :func:`piece_mode`
    found that exact at load).
    """
    if not plan.prefills:
        return 0
    tokens = sum(pf.length for pf in plan.prefills)
    if getattr(model, "pieces_together", False) and tokens > PREFILL_ALIGN:
        return int(getattr(model, "piece_threads", PIECE_THREADS))
    return PIECE_THREADS


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


class Llama:
    """Inference-only Llama: token ids + a :class:`StepPlan` in, logits out."""

    def __init__(
        self,
        config: ModelConfig,
        state: Mapping[str, torch.Tensor],
        fmt: WeightFormat = "fp32",
        lora: Mapping[str, LoRA] | None = None,
        *,
        kernel: Q4Kernel | None | Literal["default"] = "default",
    ) -> None:
        """``lora``: unmerged adapter factors by base weight name (see ``loader.read_lora``).

        ``kernel``: q4's native kernel (``None``: torch's int4 kernel); by default
        :func:`native.kernel` with the settings from the environment."""
        self.config = config
        self.format: WeightFormat = fmt
        # Keys/values in bf16 where the CPU computes in bf16: attention over many or long
        # sequences reads the whole cache every step, and bf16 halves those bytes.
        self.kv_dtype = torch.bfloat16 if fmt in ("q4", "bf16") else torch.float32
        # Settings.engine_batch_invariant (the engine sets it after loading)
        self.batch_invariant = True
        # With batch invariance: a step's prompt pieces go through the layers in one pass,
        # on piece_threads threads (only where piece_mode found that exact on this CPU;
        # the engine checks at load)
        self.pieces_together = False
        self.piece_threads = PIECE_THREADS
        c = config

        def get(name: str) -> torch.Tensor:
            try:
                # copy=True: a tensor left pointing into the memory-mapped file would keep
                # the whole mapping (and every page we touched) resident.
                return state[name].to(torch.float32, copy=True)
            except KeyError:
                raise ConfigError(f"model weights lack {name}") from None

        embed = get("model.embed_tokens.weight").contiguous()  # [vocab, hidden]
        lora = lora or {}
        if fmt == "q4" and kernel == "default":
            kernel = native.kernel()
        kern = kernel if fmt == "q4" and kernel != "default" else None

        def fused(names: list[str], parts: list[torch.Tensor]) -> LoRA | None:
            return fuse_lora([lora.get(n) for n in names], [t.shape[0] for t in parts])

        head = embed if c.tie_embeddings else get("lm_head.weight")
        self.lm_head = Linear(head, fmt, lora.get("lm_head.weight"), decode_bits=8, kernel=kern)
        # Row lookups only: with compressed weights a half-size fp16 table is plenty.
        self.embed = embed if fmt == "fp32" else embed.to(torch.float16)
        del embed, head
        self.norm = get("model.norm.weight")
        self.layers: list[LayerWeights] = []
        for i in range(c.n_layers):
            p = f"model.layers.{i}."
            qkv_names = [p + f"self_attn.{n}_proj.weight" for n in ("q", "k", "v")]
            gate_up_names = [p + f"mlp.{n}_proj.weight" for n in ("gate", "up")]
            qkv_parts = [get(n) for n in qkv_names]
            gate_up_parts = [get(n) for n in gate_up_names]
            o_name, down_name = p + "self_attn.o_proj.weight", p + "mlp.down_proj.weight"
            self.layers.append(
                LayerWeights(
                    attn_norm=get(p + "input_layernorm.weight"),
                    qkv=Linear(torch.cat(qkv_parts), fmt, fused(qkv_names, qkv_parts), kernel=kern),
                    o=Linear(get(o_name), fmt, lora.get(o_name), kernel=kern),
                    mlp_norm=get(p + "post_attention_layernorm.weight"),
                    gate_up=Linear(
                        torch.cat(gate_up_parts),
                        fmt,
                        fused(gate_up_names, gate_up_parts),
                        kernel=kern,
                    ),
                    down=Linear(get(down_name), fmt, lora.get(down_name), kernel=kern),
                )
            )
        self.cos, self.sin = rope_tables(c.head_dim, c.rope_theta, c.max_positions)
        # q4 with the native kernel: decode rows of few sequences run every layer in one
        # C call (chatbot/engine/native.py)
        self.native_decoder: NativeDecoder | None = None
        if kern is not None and all(
            isinstance(lin.native, native.PackedQ4)
            for layer in self.layers
            for lin in (layer.qkv, layer.o, layer.gate_up, layer.down)
        ):
            self.native_decoder = NativeDecoder(kern, c, self.layers)

    @classmethod
    def from_folder(
        cls,
        path: Path,
        fmt: WeightFormat = "fp32",
        adapter: Path | None = None,
        *,
        kernel: Q4Kernel | None | Literal["default"] = "default",
    ) -> Llama:
        """Load a Hugging Face Llama folder (safetensors), merging a LoRA adapter if given.

        ``kernel``: q4's native kernel, as for the constructor."""
        from chatbot.engine.loader import (
            load_state_dict,
            merge_lora,
            read_config,
            read_lora,
            release_memory,
        )

        config = ModelConfig.from_hf(read_config(path))
        state = load_state_dict(path)
        lora = None
        if adapter is not None:
            # q4 keeps the adapter beside its 4-bit weights; the other formats merge it.
            if fmt == "q4":
                lora = read_lora(adapter, state)
            else:
                merge_lora(state, adapter)
        model = cls(config, state, fmt, lora, kernel=kernel)
        del state
        release_memory()
        return model

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, plan: StepPlan, cache: KVCache) -> torch.Tensor:
        """Run one step; returns fp32 logits [len(plan.logit_rows), vocab].

        tokens: [N] ids, decode rows first, then each prefill chunk's tokens. The kernels
        are ``plan.kernels`` (the model runner's choice), else :func:`choose_kernels`'s.
        """
        n_dec = len(plan.decode_positions)
        slots = plan.decode_slots or list(range(n_dec))
        kernels = plan.kernels or choose_kernels(self, plan, cache.k)
        q4_rows = kernels.q4_rows
        dec = self.native_decoder
        if kernels.native_decode:
            if dec is None:
                raise ValueError("the plan asks for the native decode step, which this model lacks")
            # A reply must not depend on the batch it runs in, on how its prompt was cut or
            # on whether its prefix came from the cache (issue #16). Decode rows go through
            # the native step, whose rows are exact and independent of each other (calls of
            # at most max_rows rows, in order: a row attends to what earlier rows of its
            # slot wrote). Prompt chunks go through torch in pieces: the scheduler plans
            # every chunk as one piece of the prompt (prompt_piece_end), so the same prompt
            # always meets the same computations, alone or, where piece_mode found that
            # exact, in one pass with the step's other pieces (Llama._pieces).
            x = F.embedding(tokens[:n_dec], self.embed).float()
            step = dec.max_rows
            for start in range(0, n_dec, step):
                end = min(start + step, n_dec)
                dec(x[start:end], plan.decode_positions[start:end], slots[start:end],
                    self.cos, self.sin, cache.k, cache.v)
            if not self.batch_invariant:
                # prompt chunks of the step together through torch (faster, not exact)
                if plan.prefills:
                    rest = StepPlan(prefills=plan.prefills)
                    x = torch.cat([x, self._hidden(tokens[n_dec:], rest, cache, 0)])
                rows = torch.tensor(plan.logit_rows, dtype=torch.long)
                last = rms_norm(x[rows], self.norm, self.config.rms_eps)  # [R, hidden]
                return self.lm_head(last, q4_rows).float()  # [R, vocab]
            pieces = [x]
            threads = torch.get_num_threads()
            want = kernels.piece_threads  # see piece_threads
            if want and threads != want:
                torch.set_num_threads(want)
            try:
                pieces += self._pieces(tokens[n_dec:], plan.prefills, cache)
            finally:
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)
            x = torch.cat(pieces)
            rows = torch.tensor(plan.logit_rows, dtype=torch.long)
            last = rms_norm(x[rows], self.norm, self.config.rms_eps)  # [R, hidden]
            # every logit row through the same (8-bit) head, prompt ends included
            return self.lm_head(last, len(plan.logit_rows)).float()  # [R, vocab]
        else:
            x = self._hidden(tokens, plan, cache, q4_rows)
        rows = torch.tensor(plan.logit_rows, dtype=torch.long)
        last = rms_norm(x[rows], self.norm, self.config.rms_eps)  # [R, hidden]
        # decode rows come first in logit_rows too (see StepPlan)
        return self.lm_head(last, q4_rows).float()  # [R, vocab]

    def _pieces(
        self, tokens: torch.Tensor, prefills: list[Prefill], cache: KVCache
    ) -> list[torch.Tensor]:
        """The hidden states of a step's prompt chunks, cut into pieces of at most
        PREFILL_ALIGN tokens: all pieces through the layers together where that gives each
        piece the same numbers as alone (``pieces_together``, found by
        :func:`piece_mode` at load), else one piece at a time."""
        split = [
            Prefill(pf.slot, begin, min(PREFILL_ALIGN, pf.start + pf.length - begin))
            for pf in prefills
            for begin in range(pf.start, pf.start + pf.length, PREFILL_ALIGN)
        ]
        if not split:
            return []
        if self.pieces_together:
            together = StepPlan(prefills=split)
            return [self._hidden(tokens, together, cache, 0, min_rows=PIECE_MIN_ROWS)]
        out, at = [], 0
        for piece in split:
            one = StepPlan(prefills=[piece])
            out.append(self._hidden(tokens[at : at + piece.length], one, cache, 0))
            at += piece.length
        return out

    def _hidden(
        self,
        tokens: torch.Tensor,
        plan: StepPlan,
        cache: KVCache,
        q4_rows: int,
        *,
        min_rows: int = 0,
    ) -> torch.Tensor:
        """Every layer on the step's tokens: the final hidden states [N, hidden].

        ``q4_rows``: how many leading decode rows read the 4-bit weights (q4 only).
        ``min_rows``: each matmul gets at least this many rows (zero rows added, their
        results dropped): a matmul kernel may take another path, with its sums in another
        order, for a handful of rows (oneDNN's bf16 matmul on the Zen 4 does below 4 rows,
        and on two threads below 12), so a short piece gets the same numbers alone as
        beside others.
        """
        c = self.config
        n_dec = len(plan.decode_positions)
        positions = list(plan.decode_positions)
        for pf in plan.prefills:
            positions.extend(range(pf.start, pf.start + pf.length))
        pos = torch.tensor(positions, dtype=torch.long)
        cos, sin = self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1)  # [N, 1, hd]
        dec_pos = pos[:n_dec]
        slots = plan.decode_slots or list(range(n_dec))
        n_seqs = len(set(slots))
        # A few sequences (or any drafts): every decode row attends alone, to exactly its own
        # cache prefix, so a row's numbers do not depend on the rows beside it.
        one_by_one = n_seqs <= FEW_DECODE_ROWS or n_seqs < n_dec
        if not one_by_one and slots != list(range(n_dec)):
            raise ValueError("batched decode rows must be slots 0..n-1 in order")
        dec_slots = torch.arange(n_dec)
        dec_len = max(plan.decode_positions, default=-1) + 1
        # every row must see its own token after the shared prefix
        shared = min(plan.shared_prefix, min(plan.decode_positions, default=0))
        # [n_dec, 1, 1, L]: row b sees cache positions 0..pos[b]
        dec_mask = (torch.arange(dec_len)[None, :] <= dec_pos[:, None])[:, None, None, :]
        pf_masks = [
            torch.ones(pf.length, pf.start + pf.length, dtype=torch.bool).tril(pf.start)
            for pf in plan.prefills
        ]
        hd, nh, nkv = c.head_dim, c.n_heads, c.n_kv_heads
        rep = nh // nkv
        n_rows = len(tokens)
        pad = max(0, min_rows - n_rows)

        def matmul(lin: Linear, h: torch.Tensor) -> torch.Tensor:
            if not pad:
                return lin(h, q4_rows)
            return lin(F.pad(h, (0, 0, 0, pad)), q4_rows)[:n_rows]

        x = F.embedding(tokens, self.embed).float()  # [N, hidden]
        for li, layer in enumerate(self.layers):
            h = rms_norm(x, layer.attn_norm, c.rms_eps)
            qkv = matmul(layer.qkv, h)  # [N, (nh + 2 nkv) hd]
            # q and k sit side by side in the fused output: rotate them in one go.
            qk = apply_rope(qkv[:, : (nh + nkv) * hd].view(-1, nh + nkv, hd), cos, sin)
            q, k = qk[:, :nh], qk[:, nh:]
            v = qkv[:, (nh + nkv) * hd :].view(-1, nkv, hd)
            kc, vc = cache.k[li], cache.v[li]  # [slots, nkv, cap, hd]
            q = q.to(kc.dtype)  # attention runs in the cache's dtype (fp32 accumulation)
            out = torch.empty(q.shape[0], nh, hd)
            if n_dec and one_by_one:
                for b, (slot, p) in enumerate(zip(slots, plan.decode_positions, strict=True)):
                    kc[slot, :, p] = k[b]
                    vc[slot, :, p] = v[b]
                    out[b] = F.scaled_dot_product_attention(
                        q[b].view(1, nkv, rep, hd),
                        kc[slot : slot + 1, :, : p + 1],
                        vc[slot : slot + 1, :, : p + 1],
                    ).view(nh, hd)
            elif n_dec:
                kc[dec_slots, :, dec_pos] = k[:n_dec].to(kc.dtype)
                vc[dec_slots, :, dec_pos] = v[:n_dec].to(kc.dtype)
                qd = q[:n_dec].reshape(n_dec, nkv, rep, hd)  # [B, nkv, rep, hd]
                keys = kc[:n_dec, :, :dec_len]  # [B, nkv, L, hd] (a view, no copy)
                vals = vc[:n_dec, :, :dec_len]
                if shared >= MIN_SHARED_PREFIX:
                    att = shared_prefix_attention(qd, keys, vals, shared, dec_mask)
                else:
                    att = F.scaled_dot_product_attention(qd, keys, vals, attn_mask=dec_mask)
                out[:n_dec] = att.reshape(n_dec, nh, hd)
            row = n_dec
            for pf, mask in zip(plan.prefills, pf_masks, strict=True):
                end = pf.start + pf.length
                sl = slice(row, row + pf.length)
                kc[pf.slot, :, pf.start : end] = k[sl].transpose(0, 1)
                vc[pf.slot, :, pf.start : end] = v[sl].transpose(0, 1)
                qp = q[sl].transpose(0, 1).unsqueeze(0)  # [1, nh, T, hd]
                o = F.scaled_dot_product_attention(
                    qp,
                    kc[pf.slot : pf.slot + 1, :, :end],  # [1, nkv, end, hd]
                    vc[pf.slot : pf.slot + 1, :, :end],
                    attn_mask=mask,
                    enable_gqa=True,
                )  # [1, nh, T, hd]
                out[sl] = o[0].transpose(0, 1)
                row += pf.length
            x = x + matmul(layer.o, out.view(-1, nh * hd))
            h = rms_norm(x, layer.mlp_norm, c.rms_eps)
            gu = matmul(layer.gate_up, h)  # [N, 2 * inter]
            gate, up = gu[:, : c.intermediate_size], gu[:, c.intermediate_size :]
            x = x + matmul(layer.down, F.silu(gate) * up)
        return x


# Prompt pieces the load-time check puts through one pass, alone and together: a full
# step's worth (the scheduler's idle budget, 512 tokens) with short and odd pieces among
# them (below 12 rows oneDNN's bf16 matmul takes other paths on the Zen 4).
PROBE_PIECES = (64, 37, 64, 1, 64, 5, 3, 11, 64, 64, 64, 15, 30)


def piece_mode(model: Llama) -> tuple[bool, int]:
    """How a step's prompt pieces may run on this CPU: ``(together, threads)``.

    ``together``: pieces in one pass get, bit for bit, the hidden states each gets alone
    (each matmul given at least PIECE_MIN_ROWS rows, see ``Llama._hidden``); ``threads``:
    the thread count for a pass bigger than one piece (all of torch's threads where that
    is exact too, else PIECE_THREADS).

    Every op of a layer is row-wise except the matmuls, whose rows are exact only where
    the kernel's split of the sums does not depend on how many rows it gets or on the
    thread count. oneDNN's bf16 matmul on AVX512-BF16 splits outputs, not sums, from a
    few dozen rows up, but that is no promise for every CPU, library build or thread
    count, so it is checked on the running machine instead of assumed: random pieces
    (``PROBE_PIECES``) through the first layer (every layer has the same shapes and
    kernels), each alone on one thread, then together in several groupings and thread
    counts. Not exact: ``(False, PIECE_THREADS)``, one piece at a time as before. About
    0.14 s on the 2-core Zen 4.
    """
    probe = copy.copy(model)
    probe.layers = model.layers[:1]
    c = model.config
    cache = KVCache(c, max_slots=len(PROBE_PIECES), max_len=PREFILL_ALIGN, dtype=model.kv_dtype)
    cache.reserve(len(PROBE_PIECES), PREFILL_ALIGN)
    gen = torch.Generator().manual_seed(16)
    tokens = torch.randint(0, c.vocab_size, (sum(PROBE_PIECES),), generator=gen)
    pieces = [Prefill(slot, 0, n) for slot, n in enumerate(PROBE_PIECES)]
    starts = list(itertools.accumulate(PROBE_PIECES, initial=0))  # where each piece starts
    groups = [(0, len(PROBE_PIECES)), (0, 2), (3, 4), (3, 8), (5, 7), (11, 13)]

    def hidden(threads: int, together: bool, first: int, last: int) -> torch.Tensor:
        torch.set_num_threads(threads)
        probe.pieces_together = together
        part = tokens[starts[first] : starts[last]]
        return torch.cat(probe._pieces(part, pieces[first:last], cache))

    before = torch.get_num_threads()
    try:
        with torch.inference_mode():
            # each alone, padded as in one pass: the numbers every grouping must give
            alone = torch.cat([hidden(PIECE_THREADS, True, i, i + 1) for i in range(len(pieces))])

            def exact(threads: int) -> bool:
                return all(
                    torch.equal(hidden(threads, True, a, b), alone[starts[a] : starts[b]])
                    for a, b in groups
                )

            together = exact(PIECE_THREADS)
            threads = before if together and before > 1 and exact(before) else PIECE_THREADS
    finally:
        torch.set_num_threads(before)
    log.info(
        "prompt pieces on this CPU: %s, on %d thread%s",
        "together in one pass" if together else "one at a time (not exact in one pass)",
        threads,
        "" if threads == 1 else "s",
    )
    return together, threads
