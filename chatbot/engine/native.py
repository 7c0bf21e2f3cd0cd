"""Our one native kernel: 4-bit weight x fp32 activation products for decode rows.

``kernels/q4.c`` is compiled once per machine with the local C compiler
(``-O3 -march=native -fopenmp``) into ``~/.cache/chatbot/kernels`` (``CHATBOT_CACHE_DIR``
moves it) and loaded with ctypes: no build step at install time and no torch headers,
so it builds in about a second. Where no compiler is found, or ``CHATBOT_NATIVE=0``,
:func:`kernel` returns ``None`` and the q4 format falls back to torch's int4 kernel.
Those settings come in as :class:`NativeOptions` (from :class:`chatbot.settings.Settings`).

The interface is a few C structs (a weight, a layer, a decode step) mirrored below by
``ctypes.Structure`` classes; loading checks the library's ABI version and struct sizes
against the mirrors, so a mismatch fails at load instead of corrupting memory.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from chatbot.engine.formats import cpu_flags

if TYPE_CHECKING:
    from chatbot.settings import Settings

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "q4.c"
BLOCK = 32
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")
# q4.c's Q4_ABI_VERSION: the structs below must match the ones there.
ABI_VERSION = 2


class KernelABIError(OSError):
    """The built library's interface is not the one this module mirrors."""


@dataclass(frozen=True)
class NativeOptions:
    """What building and loading the kernel depends on (from :class:`Settings`)."""

    enabled: bool = True  # CHATBOT_NATIVE
    int8_activations: bool = False  # CHATBOT_Q4_ACTIVATIONS=int8: the opt-in VNNI build
    cache_dir: Path | None = None  # CHATBOT_CACHE_DIR; None: ~/.cache/chatbot
    compiler: str | None = None  # CC; None: cc or gcc on the PATH

    @classmethod
    def from_settings(cls, settings: Settings) -> NativeOptions:
        return cls(
            enabled=settings.engine_native,
            int8_activations=settings.engine_q4_activations.strip().lower() == "int8",
            cache_dir=settings.cache_dir,
            compiler=settings.engine_cc or None,
        )

    @classmethod
    def from_env(cls) -> NativeOptions:
        """The options the process's settings give (``Settings.from_env()``)."""
        from chatbot.settings import Settings

        return cls.from_settings(Settings.from_env())


def _flags(options: NativeOptions) -> tuple[str, ...]:
    # the VNNI int8-activation path (kernels/q4.c)
    return (*FLAGS, "-DQ4_INT8_ACTIVATIONS") if options.int8_activations else FLAGS


def _cache_dir(options: NativeOptions) -> Path:
    root = options.cache_dir or Path.home() / ".cache" / "chatbot"
    return Path(root) / "kernels"


def _compiler(options: NativeOptions) -> str | None:
    return options.compiler or shutil.which("cc") or shutil.which("gcc")


def _cpu_model() -> str:
    # -march=native code is only valid on this CPU: the cache key includes it.
    return " ".join(sorted(cpu_flags()))


def build(force: bool = False, options: NativeOptions | None = None) -> Path:
    """Compile ``q4.c`` for this machine (cached by source, flags and CPU); returns the .so.

    ``options``: by default :meth:`NativeOptions.from_env`.
    """
    options = options or NativeOptions.from_env()
    cc = _compiler(options)
    if cc is None:
        raise OSError("no C compiler (cc/gcc) found")
    flags = _flags(options)
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        source + " ".join(flags).encode() + _cpu_model().encode() + cc.encode()
    ).hexdigest()[:16]
    out = _cache_dir(options) / f"q4-{key}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        proc = subprocess.run(
            [cc, *flags, str(SOURCE), "-o", str(tmp_out)],
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


class Q4Weight(ctypes.Structure):
    """q4.c's ``q4_weight_t``: one weight matrix and its optional adapter."""

    _fields_ = [
        ("qs", ctypes.c_void_p),
        ("scales", ctypes.c_void_p),
        ("lora_a", ctypes.c_void_p),
        ("lora_b_t", ctypes.c_void_p),
        ("lora_span", ctypes.c_void_p),
        ("rank", ctypes.c_int32),
        ("n", ctypes.c_int32),
        ("k", ctypes.c_int32),
    ]


# q4.c's W_QKV, W_O, W_GATE_UP, W_DOWN: a layer's weights, in this order
LAYER_WEIGHTS = ("qkv", "o", "gate_up", "down")


class Q4Layer(ctypes.Structure):
    """q4.c's ``q4_layer_t``: a decoder layer's norms and weights."""

    _fields_ = [
        ("attn_norm", ctypes.c_void_p),
        ("mlp_norm", ctypes.c_void_p),
        ("w", Q4Weight * len(LAYER_WEIGHTS)),
    ]


class Q4Decode(ctypes.Structure):
    """q4.c's ``q4_decode_t``: the model (set once) and one decode step's rows."""

    _fields_ = [
        ("layers", ctypes.c_int32),
        ("hidden", ctypes.c_int32),
        ("inter", ctypes.c_int32),
        ("heads", ctypes.c_int32),
        ("kv_heads", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        ("max_positions", ctypes.c_int32),
        ("eps", ctypes.c_float),
        ("layer", ctypes.POINTER(Q4Layer)),
        ("cos", ctypes.c_void_p),
        ("sin", ctypes.c_void_p),
        ("rows", ctypes.c_int32),
        ("n_slots", ctypes.c_int32),
        ("capacity", ctypes.c_int64),
        ("positions", ctypes.POINTER(ctypes.c_int32)),
        ("slots", ctypes.POINTER(ctypes.c_int32)),
        ("x", ctypes.c_void_p),
        ("k_cache", ctypes.c_void_p),
        ("v_cache", ctypes.c_void_p),
    ]


# q4_struct_size(i) must equal these
STRUCTS: tuple[type[ctypes.Structure], ...] = (Q4Weight, Q4Layer, Q4Decode)


def weight_struct(packed: PackedQ4 | PackedQ8, lora: NativeLoRA | None = None) -> Q4Weight:
    """The kernel's view of a packed weight and its adapter (the tensors must outlive it)."""
    scales = packed.dm if isinstance(packed, PackedQ4) else packed.d
    a, b_t, span = lora.pointers() if lora is not None else (None, None, None)
    return Q4Weight(
        packed.qs.data_ptr(), scales.data_ptr(), a, b_t, span,
        0 if lora is None else lora.rank, packed.out_features, packed.in_features,
    )  # fmt: skip


def check_abi(lib: ctypes.CDLL) -> None:
    """Raise :class:`KernelABIError` unless ``lib`` has the interface mirrored here."""
    try:
        version, size = lib.q4_abi_version, lib.q4_struct_size
    except AttributeError as exc:
        raise KernelABIError(f"native kernel without an ABI version: {exc}") from None
    version.restype = ctypes.c_int
    size.argtypes, size.restype = [ctypes.c_int], ctypes.c_long
    if version() != ABI_VERSION:
        raise KernelABIError(f"native kernel ABI {version()}, expected {ABI_VERSION}")
    for i, struct in enumerate(STRUCTS):
        if size(i) != ctypes.sizeof(struct):
            raise KernelABIError(
                f"native kernel's {struct.__name__} is {size(i)} bytes, "
                f"the ctypes mirror {ctypes.sizeof(struct)}"
            )


class Q4Kernel:
    """ctypes face of ``q4_matmul`` and ``q8_matmul`` (``q4_decode``: :class:`NativeDecoder`)."""

    def __init__(self, path: Path) -> None:
        torch.set_num_threads(torch.get_num_threads())  # make sure torch's libgomp is loaded
        self.lib = lib = ctypes.CDLL(str(path))
        check_abi(lib)
        p, i = ctypes.c_void_p, ctypes.c_int
        for fn in (lib.q4_matmul, lib.q8_matmul):
            fn.argtypes = [ctypes.POINTER(Q4Weight), p, i, p, p]
            fn.restype = i
        self._fn, self._q8 = lib.q4_matmul, lib.q8_matmul
        lib.q4_scratch_floats.argtypes = [i, i, i]
        lib.q4_scratch_floats.restype = ctypes.c_long
        self._scratch_floats = lib.q4_scratch_floats
        lib.q4_decode.argtypes = [ctypes.POINTER(Q4Decode)]
        lib.q4_decode.restype = i
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
        if isinstance(packed, PackedQ8):
            fn, scratch = self._q8, torch.empty(rows * rank + 16)
        else:
            fn, scratch = self._fn, torch.empty(self._scratch_floats(rows, k, rank))
        weight = weight_struct(packed, lora)
        rc = fn(ctypes.byref(weight), x.data_ptr(), rows, scratch.data_ptr(), y.data_ptr())
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
def kernel(options: NativeOptions | None = None) -> Q4Kernel | None:
    """The compiled kernel, or ``None`` (disabled, no compiler, failed build, wrong ABI).

    ``options``: by default :meth:`NativeOptions.from_env`.
    """
    options = options or NativeOptions.from_env()
    if not options.enabled:
        return None
    try:
        return Q4Kernel(build(options=options))
    except OSError as exc:
        log.warning("native q4 kernel unavailable, using torch's int4 kernel: %s", exc)
        return None


class _DecoderConfig(Protocol):  # model.ModelConfig's fields that the C step needs
    @property
    def n_layers(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def intermediate_size(self) -> int: ...
    @property
    def n_heads(self) -> int: ...
    @property
    def n_kv_heads(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def rms_eps(self) -> float: ...
    @property
    def max_positions(self) -> int: ...


class _NativeLinear(Protocol):  # linear.Linear, as far as the C step reads it
    @property
    def native(self) -> PackedQ4 | PackedQ8 | None: ...
    @property
    def native_lora(self) -> NativeLoRA | None: ...


class _DecoderLayer(Protocol):  # model.LayerWeights
    @property
    def attn_norm(self) -> torch.Tensor: ...
    @property
    def mlp_norm(self) -> torch.Tensor: ...
    @property
    def qkv(self) -> _NativeLinear: ...
    @property
    def o(self) -> _NativeLinear: ...
    @property
    def gate_up(self) -> _NativeLinear: ...
    @property
    def down(self) -> _NativeLinear: ...


class NativeDecoder:
    """``q4_decode`` over a model's layers: every layer of a decode step in one call.

    Holds the layer table (weights, norms, adapters) built once at load; the KV cache's
    address and shape are set per call, since the cache reallocates when it grows.
    """

    def __init__(
        self, kern: Q4Kernel, config: _DecoderConfig, layers: Sequence[_DecoderLayer]
    ) -> None:
        self._fn = kern.lib.q4_decode
        self.max_rows = kern.max_rows
        c = config
        self.config = c
        table = (Q4Layer * len(layers))()
        keep: list[torch.Tensor] = []
        for entry, layer in zip(table, layers, strict=True):
            entry.attn_norm, entry.mlp_norm = layer.attn_norm.data_ptr(), layer.mlp_norm.data_ptr()
            keep += [layer.attn_norm, layer.mlp_norm]
            for i, name in enumerate(LAYER_WEIGHTS):
                lin: _NativeLinear = getattr(layer, name)
                if not isinstance(lin.native, PackedQ4):
                    raise ValueError("every layer needs native q4 weights")
                entry.w[i] = weight_struct(lin.native, lin.native_lora)
        self._keep = keep  # the norms' storage must outlive the table
        self._table = table
        self._step = Q4Decode(
            layers=c.n_layers, hidden=c.hidden_size, inter=c.intermediate_size,
            heads=c.n_heads, kv_heads=c.n_kv_heads, head_dim=c.head_dim,
            max_positions=c.max_positions, eps=c.rms_eps, layer=table,
        )  # fmt: skip

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

        ``k_cache``/``v_cache``: bf16 [layers, slots, kv_heads, capacity, head_dim];
        ``cos``/``sin``: the RoPE tables [max_positions, head_dim] fp32.
        """
        rows = x.shape[0]
        if not (x.dtype == torch.float32 and x.is_contiguous()):
            raise ValueError("x must be contiguous fp32")
        if not (self.supports(k_cache) and self.supports(v_cache)):
            raise ValueError("the native decode path needs a contiguous bf16 KV cache")
        if not (cos.is_contiguous() and sin.is_contiguous()):
            raise ValueError("the RoPE tables must be contiguous")
        _, n_slots, _, capacity, _ = k_cache.shape
        step = self._step
        step.rows, step.n_slots, step.capacity = rows, n_slots, capacity
        step.positions = (ctypes.c_int32 * rows)(*positions)
        step.slots = (ctypes.c_int32 * rows)(*slots)
        step.x, step.cos, step.sin = x.data_ptr(), cos.data_ptr(), sin.data_ptr()
        step.k_cache, step.v_cache = k_cache.data_ptr(), v_cache.data_ptr()
        rc = self._fn(ctypes.byref(step))
        if rc != 0:
            raise ValueError(f"native decode rejected the step (code {rc})")
