"""Weight formats, what this CPU runs well, and the format ``auto`` picks.

CPU feature detection, torch capability probes and the format choice live here, in one
module that imports nothing else of the engine: ``linear`` (the formats' matmuls),
``native`` (our C kernel, built per CPU) and ``engine`` (``Settings.engine_dtype``) all
ask it, and it asks none of them.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F

from chatbot.errors import ConfigError

WeightFormat = Literal["fp32", "bf16", "fp16", "int8", "q4"]
FORMATS: tuple[WeightFormat, ...] = ("fp32", "bf16", "fp16", "int8", "q4")

Q4_GROUP = 32


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The kernel's CPU feature flags (Linux ``/proc/cpuinfo``); empty elsewhere.

    torch 2.13 has no public CPU-feature probe, and the weight format that decodes fastest
    depends on these.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return frozenset(next((ln for ln in f if ln.startswith("flags")), "").split()[2:])
    except OSError:
        return frozenset()


def native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AVX512-BF16 or AMX), where bf16 weights pay off."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def fbgemm_available() -> bool:
    """True when torch was built with fbgemm (x86 builds are)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def fast_fp16() -> bool:
    """True where fbgemm's fp16-weight GEMM runs its vector kernels (AVX2 with FMA and F16C;
    without them fbgemm falls back to slow reference loops)."""
    return fbgemm_available() and {"avx2", "fma", "f16c"} <= cpu_flags()


@functools.cache
def onednn_linear_available() -> bool:
    """True when torch's oneDNN packed-weight linear ops exist and agree with ``F.linear``."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(48, 32, generator=gen).to(torch.bfloat16)
        x = torch.randn(5, 32, generator=gen).to(torch.bfloat16)
        with torch.inference_mode():
            packed = torch.ops.mkldnn._reorder_linear_weight(w)
            got = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
            return bool(torch.allclose(got.float(), F.linear(x, w).float(), atol=0.05))
    except (AttributeError, RuntimeError):
        return False


def quantize_q4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit groups of :data:`Q4_GROUP` along the input dimension, for torch's
    int4 kernel (q4 where our native kernel cannot be built).

    Returns torch's packed int4 weight and the ``[in / 32, out, 2]`` bf16 scales/offsets
    its CPU kernel expects (it computes ``(q - 8) * scale + offset``).
    """
    n, k = w.shape
    groups = w.reshape(n, k // Q4_GROUP, Q4_GROUP)
    low = groups.amin(-1, keepdim=True)
    scale = (groups.amax(-1, keepdim=True) - low).clamp_min(1e-10) / 15
    q = torch.clamp(torch.round((groups - low) / scale), 0, 15).to(torch.int32).reshape(n, k)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    scales = torch.stack(
        [scale.reshape(n, -1).t(), (low + 8 * scale).reshape(n, -1).t()], dim=-1
    ).contiguous()
    return packed, scales.to(torch.bfloat16)


@functools.cache
def q4_available() -> bool:
    """True when this torch has the CPU int4 weight-only matmul and it computes what we expect."""
    try:
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(64, 64, generator=gen)
        x = torch.randn(2, 64, generator=gen)
        with torch.inference_mode():
            packed, scales = quantize_q4(w)
            got = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x.to(torch.bfloat16), packed, Q4_GROUP, scales
            )
        ref = F.linear(x, w)
        return bool((got.float() - ref).abs().max() < 0.1 * ref.abs().max())
    except (AttributeError, RuntimeError):
        return False


def resolve_format(name: str) -> WeightFormat:
    """Map ``Settings.engine_dtype`` to a weight format.

    ``auto`` picks what decodes fastest without changing replies, measured with
    bench/engine.py (figures in the README's engine table):

    - q4 on CPUs with native bf16 instructions (AVX512-BF16/AMX): 4-bit weights (the
      GGUF's own Q4_1 values for our base model) for decoding, through our native kernel
      (a whole decode step of up to four sequences in one C call), a bf16 copy for prompt
      chunks and big batches;
    - fp16 on other x86 CPUs with AVX2 (fbgemm's fp16-weight GEMM, fp32 activations):
      half of fp32's bytes and ~1.4x faster single-stream decoding on a 2-core AVX2 box;
      weights rounded to fp16 are near-exact (logits within fp32 rounding of the
      reference, and the benchmark's greedy replies come out word for word as fp32's);
    - fp32 elsewhere.

    int8 (dynamic activation quantization) is faster still on AVX2, but it changes greedy
    replies after a few tokens, for the worse; it stays an explicit choice.
    """
    name = name.lower()
    if name == "auto":
        if native_bf16() and onednn_linear_available():
            return "q4" if q4_available() else "bf16"
        return "fp16" if fast_fp16() else "fp32"
    if name not in FORMATS:
        raise ConfigError(f"engine dtype {name!r} is not one of auto, {', '.join(FORMATS)}")
    if name in ("fp16", "int8") and not fbgemm_available():
        raise ConfigError(f"engine dtype {name} needs a torch build with fbgemm (x86)")
    return name  # type: ignore[return-value]
