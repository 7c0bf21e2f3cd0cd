"""Our one native kernel: 4-bit weight x fp32 activation products for decode rows.

``kernels/q4.c`` is compiled once per machine with the local C compiler
(``-O3 -march=native -fopenmp``) into ``~/.cache/chatbot/kernels`` (``CHATBOT_CACHE_DIR``
moves it) and loaded with ctypes: no build step at install time and no torch headers,
so it builds in about a second. Where no compiler is found, or ``CHATBOT_NATIVE=0``,
:func:`kernel` returns ``None`` and the q4 format falls back to torch's int4 kernel.

It links the same ``libgomp.so.1`` torch has already loaded (one OpenMP thread pool, and
``torch.set_num_threads`` sets its thread count).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from chatbot.engine.model import LayerWeights, ModelConfig

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "q4.c"
BLOCK = 32
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")


def _flags() -> tuple[str, ...]:
    # CHATBOT_Q4_ACTIVATIONS=int8 builds the VNNI int8-activation path (kernels/q4.c)
    if os.environ.get("CHATBOT_Q4_ACTIVATIONS", "").strip().lower() == "int8":
        return (*FLAGS, "-DQ4_INT8_ACTIVATIONS")
    return FLAGS


def _cache_dir() -> Path:
    root = os.environ.get("CHATBOT_CACHE_DIR") or Path.home() / ".cache" / "chatbot"
    return Path(root) / "kernels"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cpu_model() -> str:
    # -march=native code is only valid on this CPU: the cache key includes it.
    from chatbot.engine.linear import cpu_flags

    return " ".join(sorted(cpu_flags()))


def build(force: bool = False) -> Path:
    """Compile ``q4.c`` for this machine (cached by source, flags and CPU); returns the .so."""
    cc = _compiler()
    if cc is None:
        raise OSError("no C compiler (cc/gcc) found")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        source + " ".join(_flags()).encode() + _cpu_model().encode() + cc.encode()
    ).hexdigest()[:16]
    out = _cache_dir() / f"q4-{key}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        proc = subprocess.run(
            [cc, *_flags(), str(SOURCE), "-o", str(tmp_out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise OSError(f"{cc} failed to build {SOURCE.name}:\n{proc.stderr[-2000:]}")
        os.replace(tmp_out, out)  # atomic: concurrent builders agree on the result
    log.info("built native q4 kernel %s", out)
    return out


class NativeLoRA:
    """An adapter pair in the kernel's layout: ``a`` [r, k], ``b_t`` = B transposed [r, n]
    (fp32, scale folded into B), and for each of the r rows of ``b_t`` the span of outputs
    where it is nonzero (a fused q/k/v or gate/up adapter is block-diagonal: the kernel
    skips the zeros instead of reading them)."""

    def __init__(self, a: torch.Tensor, b_t: torch.Tensor) -> None:
        self.a = a.float().contiguous()
        self.b_t = b_t.float().contiguous()
        self.rank = self.a.shape[0]
        nonzero = self.b_t != 0
        cols = torch.arange(self.b_t.shape[1])
        start = torch.where(nonzero, cols, self.b_t.shape[1]).amin(dim=1)
        end = torch.where(nonzero, cols + 1, 0).amax(dim=1)
        self.span = torch.stack([start, end.clamp_min(start)], dim=1).to(torch.int32).contiguous()

    def pointers(self) -> tuple[int, int, int]:
        return self.a.data_ptr(), self.b_t.data_ptr(), self.span.data_ptr()

    @property
    def nbytes(self) -> int:
        return 4 * (self.a.numel() + self.b_t.numel() + self.span.numel())


class Q4Kernel:
    """ctypes face of ``q4_matmul``."""

    def __init__(self, path: Path) -> None:
        torch.set_num_threads(torch.get_num_threads())  # make sure torch's libgomp is loaded
        self.lib = lib = ctypes.CDLL(str(path))
        fn = lib.q4_matmul
        p, i = ctypes.c_void_p, ctypes.c_int
        fn.argtypes = [p, i, i, i, p, p, p, p, p, i, p, p]
        fn.restype = i
        self._fn = fn
        q8 = lib.q8_matmul
        q8.argtypes = [p, i, i, i, p, p, p, p, p, i, p, p]
        q8.restype = i
        self._q8 = q8
        lib.q4_scratch_floats.argtypes = [i, i, i]
        lib.q4_scratch_floats.restype = ctypes.c_long
        self._scratch_floats = lib.q4_scratch_floats
        self.max_rows = int(lib.q4_max_rows())
        # What the 4-bit products round activations to: "bf16" on AVX512-BF16 CPUs (as
        # torch's int4 kernel does), "fp32" on others, "int8" (per 32-block scale, as
        # llama.cpp's Q8_1) in opt-in VNNI builds. See kernels/q4.c.
        self.activations = ("fp32", "bf16", "int8")[lib.q4_activations()]
        self.path = path

    def matmul(
        self,
        x: torch.Tensor,
        packed: PackedQ4 | PackedQ8,
        lora: NativeLoRA | None = None,
    ) -> torch.Tensor:
        """``x`` [rows, k] fp32 (rows <= max_rows) -> [rows, n] fp32 (+ the adapter)."""
        x = x.contiguous()
        if x.dtype != torch.float32:
            x = x.float()
        rows, k = x.shape
        if k != packed.in_features or not 1 <= rows <= self.max_rows:
            raise ValueError(f"q4 kernel: bad input shape {tuple(x.shape)} for {packed}")
        rank = 0 if lora is None else lora.rank
        y = torch.empty(rows, packed.out_features)
        adapter = lora.pointers() if lora is not None else (None, None, None)
        if isinstance(packed, PackedQ8):
            fn, scratch = self._q8, torch.empty(rows * rank + 16)
            tables = (packed.qs.data_ptr(), packed.d.data_ptr())
        else:
            fn, scratch = self._fn, torch.empty(self._scratch_floats(rows, k, rank))
            tables = (packed.qs.data_ptr(), packed.dm.data_ptr())
        rc = fn(
            x.data_ptr(), rows, k, packed.out_features, *tables,
            *adapter, rank, scratch.data_ptr(), y.data_ptr(),
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"q4 kernel rejected shape {tuple(x.shape)}")
        return y


def round_activations(x: torch.Tensor, activations: str) -> torch.Tensor:
    """What the kernel multiplies the 4-bit weights with instead of ``x`` [rows, k] (the
    per-block offsets use the exact sums): for tests and error estimates."""
    if activations == "fp32":
        return x.float()
    if activations == "bf16":
        return x.to(torch.bfloat16).float()
    blocks = x.float().reshape(x.shape[0], -1, BLOCK)
    amax = blocks.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    return (torch.round(blocks * inv) * (amax / 127.0)).reshape(x.shape)


def _blocks(w: torch.Tensor) -> torch.Tensor:
    """A weight [n, k] as fp32 blocks [n, k / 32, 32] (k must be whole blocks)."""
    n, k = w.shape
    if k % BLOCK:
        raise ValueError(f"in_features {k} is not a multiple of {BLOCK}")
    return w.detach().float().reshape(n, k // BLOCK, BLOCK)


class PackedQ4:
    """A weight [n, k] in the kernel's 4-bit layout (see ``kernels/q4.c``)."""

    def __init__(self, w: torch.Tensor) -> None:
        blocks = _blocks(w)
        self.out_features, self.in_features = n, k = w.shape
        low = blocks.amin(-1)
        # fp16 scale and offset, as GGUF Q4_1 stores them; the codes are picked against the
        # rounded values, so weights that came from a Q4_1 file come back exactly.
        d = ((blocks.amax(-1) - low) / 15).half().float()
        m = low.half().float()
        q = torch.round((blocks - m[..., None]) / d.clamp_min(1e-30)[..., None]).clamp_(0, 15)
        q = q.to(torch.uint8)
        self.qs = (q[..., :16] | (q[..., 16:] << 4)).contiguous()  # [n, blocks, 16]
        self.dm = torch.stack([d, m], dim=1).contiguous()  # [n, 2, blocks] fp32

    def dequantize(self) -> torch.Tensor:
        """The fp32 weights these codes stand for."""
        q = torch.cat([self.qs & 0x0F, self.qs >> 4], dim=-1).float()  # [n, blocks, 32]
        d, m = self.dm[:, 0, :, None], self.dm[:, 1, :, None]
        return (q * d + m).reshape(self.out_features, self.in_features)

    @property
    def nbytes(self) -> int:
        return self.qs.numel() + 4 * self.dm.numel()

    def __repr__(self) -> str:
        return f"PackedQ4({self.out_features}x{self.in_features})"


class PackedQ8:
    """A weight [n, k] as GGUF Q8_0: int8 codes in blocks of 32 with one fp16 scale each.

    For the token embeddings / output head, which the GGUF keeps in 8 bits: picked against
    the rounded scale, so weights that came from a Q8_0 file come back exactly.
    """

    def __init__(self, w: torch.Tensor) -> None:
        blocks = _blocks(w)
        self.out_features, self.in_features = n, k = w.shape
        d = (blocks.abs().amax(-1) / 127).to(torch.float16)
        d32 = d.float().clamp_min(1e-30)
        q = torch.round(blocks / d32[..., None]).clamp_(-127, 127).to(torch.int8)
        self.qs = q.reshape(n, k).contiguous()
        self.d = d.float().contiguous()  # [n, blocks]: fp16 values, widened

    def dequantize(self) -> torch.Tensor:
        q = self.qs.reshape(self.out_features, -1, BLOCK).float()
        return (q * self.d[..., None]).reshape(self.out_features, self.in_features)

    @property
    def nbytes(self) -> int:
        return self.qs.numel() + 4 * self.d.numel()

    def __repr__(self) -> str:
        return f"PackedQ8({self.out_features}x{self.in_features})"


@functools.cache
def kernel() -> Q4Kernel | None:
    """The compiled kernel, or ``None`` (disabled, no compiler, failed build)."""
    if os.environ.get("CHATBOT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        return Q4Kernel(build())
    except OSError as exc:
        log.warning("native q4 kernel unavailable, using torch's int4 kernel: %s", exc)
        return None


class NativeDecoder:
    """``q4_decode`` over a model's layers: every layer of a decode step in one call.

    Holds the pointer table (weights, norms, adapters) built once at load; the KV cache's
    address and shape are passed per call, since the cache reallocates when it grows.
    """

    def __init__(self, kern: Q4Kernel, config: ModelConfig, layers: list[LayerWeights]) -> None:
        fn = kern.lib.q4_decode
        p, i = ctypes.c_void_p, ctypes.c_int
        fn.argtypes = [p, p, p, p, i, p, p, p, p, p, p, p]
        fn.restype = i
        self._fn = fn
        self.max_rows = kern.max_rows
        c = config
        self.config = c
        ptrs: list[int | None] = []
        ranks: list[int] = []
        keep: list[torch.Tensor] = []
        for layer in layers:
            ptrs += [layer.attn_norm.data_ptr(), layer.mlp_norm.data_ptr()]
            keep += [layer.attn_norm, layer.mlp_norm]
            for lin in (layer.qkv, layer.o, layer.gate_up, layer.down):
                packed, lora = lin.native, lin.native_lora
                if not isinstance(packed, PackedQ4):
                    raise ValueError("every layer needs native q4 weights")
                ptrs += [packed.qs.data_ptr(), packed.dm.data_ptr()]
                ptrs += [None, None, None] if lora is None else list(lora.pointers())
                ranks.append(0 if lora is None else lora.rank)
        self._keep = keep  # the norms' storage must outlive the table
        self._ptrs = (ctypes.c_void_p * len(ptrs))(*ptrs)
        self._ranks = (ctypes.c_int * len(ranks))(*ranks)
        self._eps = (ctypes.c_float * 1)(c.rms_eps)

    @staticmethod
    def supports(k_cache: torch.Tensor) -> bool:
        """The C step reads and writes bf16 caches only (q4 models allocate those)."""
        return k_cache.dtype == torch.bfloat16 and k_cache.is_contiguous()

    def __call__(
        self,
        x: torch.Tensor,
        positions: list[int],
        slots: list[int],
        cos: torch.Tensor,
        sin: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> None:
        """Run every layer on ``x`` [rows, hidden] fp32 in place (a decode step's rows).

        ``k_cache``/``v_cache``: bf16 [layers, slots, kv_heads, capacity, head_dim].
        """
        c = self.config
        rows = x.shape[0]
        if not (x.dtype == torch.float32 and x.is_contiguous()):
            raise ValueError("x must be contiguous fp32")
        if not (self.supports(k_cache) and self.supports(v_cache)):
            raise ValueError("the native decode path needs a contiguous bf16 KV cache")
        _, n_slots, _, capacity, _ = k_cache.shape
        cfg = (ctypes.c_int64 * 8)(
            c.n_layers, c.hidden_size, c.intermediate_size, c.n_heads, c.n_kv_heads,
            c.head_dim, n_slots, capacity,
        )  # fmt: skip
        pos = (ctypes.c_int * rows)(*positions)
        sl = (ctypes.c_int * rows)(*slots)
        rc = self._fn(
            cfg, self._eps, self._ptrs, self._ranks, rows, pos, sl, x.data_ptr(),
            cos.data_ptr(), sin.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"native decode rejected the step (code {rc})")
