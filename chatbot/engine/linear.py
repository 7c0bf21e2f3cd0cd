"""``y = x @ W.T`` in one of a few weight formats, picked for speed on the CPU at hand.

Decoding one token reads every weight once, so on a small CPU it is bound by memory
bandwidth; smaller weights decode faster. The formats:

- ``fp32``: exact; the reference.
- ``bf16``: half the bytes; fast only on CPUs with native bf16 (AVX512-BF16/AMX).
- ``fp16``: fbgemm's fp16-weight GEMM with fp32 activations: half the bytes, fp32 maths,
  fast on any AVX2 CPU.
- ``int8``: fbgemm dynamic quantization (per-channel int8 weights, activations quantized
  per call): a quarter of the bytes and the fastest batched matmul on AVX2.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F

WeightFormat = Literal["fp32", "bf16", "fp16", "int8"]
FORMATS: tuple[WeightFormat, ...] = ("fp32", "bf16", "fp16", "int8")


def fbgemm_available() -> bool:
    """True when torch was built with fbgemm (x86 builds are)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


class Linear:
    """A bias-free linear layer holding its weight in ``fmt``."""

    def __init__(self, weight: torch.Tensor, fmt: WeightFormat) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown weight format {fmt!r}; choose one of {FORMATS}")
        self.fmt = fmt
        self.out_features, self.in_features = weight.shape
        w = weight.detach().to(torch.float32).contiguous()
        self._packed: object | None = None
        self.weight: torch.Tensor | None = None
        if fmt == "fp32":
            self.weight = w
        elif fmt == "bf16":
            self.weight = w.to(torch.bfloat16)
        elif fmt == "fp16":
            self._packed = torch.ops.quantized.linear_prepack_fp16(w, None)
        else:
            scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
            with warnings.catch_warnings():
                # torch marks quantized tensors deprecated; fbgemm's kernels are still the
                # fastest int8 GEMM on AVX2, and our tests pin the behaviour we rely on.
                warnings.simplefilter("ignore")
                qweight = torch.quantize_per_channel(
                    w,
                    scales.to(torch.float64),
                    torch.zeros(w.shape[0], dtype=torch.long),
                    0,
                    torch.qint8,
                )
                self._packed = torch.ops.quantized.linear_prepack(qweight, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt == "fp32":
            assert self.weight is not None
            return F.linear(x, self.weight)
        if self.fmt == "bf16":
            assert self.weight is not None
            return F.linear(x.to(torch.bfloat16), self.weight).to(torch.float32)
        if self.fmt == "fp16":
            return torch.ops.quantized.linear_dynamic_fp16(x.contiguous(), self._packed)
        # reduce_range: fbgemm's AVX2 int8 kernels can saturate with full-range activations
        return torch.ops.quantized.linear_dynamic(x.contiguous(), self._packed, True)

    @property
    def nbytes(self) -> int:
        """Approximate bytes held by the weight."""
        per = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}[self.fmt]
        return self.out_features * self.in_features * per
