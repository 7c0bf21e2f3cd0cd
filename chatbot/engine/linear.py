"""``y = x @ W.T`` in one of a few weight formats, picked for speed on the CPU at hand.

Decoding one token reads every weight once, so on a small CPU it is bound by memory
bandwidth; smaller weights decode faster. The formats:

- ``fp32``: exact; the reference.
- ``bf16``: half the bytes, bf16 activations, fp32 accumulation. Weights are pre-packed
  for oneDNN (the kernel torch's inductor uses), which on CPUs with native bf16
  (AVX512-BF16/AMX) decodes ~2x faster than fp32 through MKL; plain ``F.linear`` is the
  fallback where those ops are missing.
- ``fp16``: fbgemm's fp16-weight GEMM with fp32 activations: half the bytes, fp32 maths,
  fast on any AVX2 CPU.
- ``q4``: 4-bit weights in groups of 32 with a scale and offset each, the layout of the
  GGUF Q4_1 file our base model ships in, so re-quantizing the base weights is lossless.
  A step's few decode rows run our native kernel (``native.py``, ``kernels/q4.c``; torch's
  int4 weight-only kernel where it cannot be built), reading an eighth of fp32's bytes,
  plus any LoRA adapter unmerged in fp32 (merging a small delta into 4-bit weights would
  round most of it away); prompt chunks and bigger batches are compute-bound and run a
  bf16 copy with the adapter merged.
- ``int8``: fbgemm dynamic quantization (per-channel int8 weights, activations quantized
  per call): a quarter of the bytes and the fastest batched matmul on AVX2.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F

from chatbot.engine import native
from chatbot.engine.formats import (  # noqa: F401  (re-exported: the formats' probes)
    FORMATS,
    Q4_GROUP,
    WeightFormat,
    cpu_flags,
    fast_fp16,
    fbgemm_available,
    native_bf16,
    onednn_linear_available,
    q4_available,
    quantize_q4,
)

# Steps of up to this many rows run on one thread (ModelRunner.small_step_rows).
ONE_THREAD_ROWS = 2
# While at most this many sequences decode, their rows (drafted tokens included) read the
# 4-bit weights; with more, the bf16 copy is faster (bench/engine.py, 16 streams on the
# idle 2-core box: 122-158 tok/s across runs this way, 114 with every decode row on 4 bits;
# single runs vary 10-15%).
Q4_DECODE_ROWS = 2
# The same with our native kernel, whose decode step stays ahead of the bf16 copy up to
# about six sequences (4 streams on the 2-core AMX box: 179-228 tok/s this way, 98 with 2);
# only used when batch invariance is off (see model.choose_kernels).
NATIVE_DECODE_ROWS = 4

LoRA = tuple[torch.Tensor, torch.Tensor]  # (A [r, in], scale * B [out, r]), fp32


def lora_down(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``x @ a`` for an adapter's narrow ``a`` [k, r], summed the same way on any thread count.

    MKL's sgemm splits the sum over k between threads for a narrow ``a``: on the Intel Xeon
    box (no AMX) the down projection's (k 1536, r 48) differs in the last bits on two threads
    from one thread, for up to ~320 rows, so a prompt's numbers would depend on how many
    threads its step got. It runs on one thread: 1 536 x 48 is ~0.1 ms more per 400-row
    pass and layer than on two.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        return x @ a
    torch.set_num_threads(1)
    try:
        return x @ a
    finally:
        torch.set_num_threads(threads)


class Linear:
    """A bias-free linear layer holding its weight in ``fmt``."""

    def __init__(
        self,
        weight: torch.Tensor,
        fmt: WeightFormat,
        lora: LoRA | None = None,
        *,
        decode_bits: int = 4,
        kernel: native.Q4Kernel | None | Literal["default"] = "default",
    ) -> None:
        """``decode_bits``: with ``q4`` and the native kernel, 8 keeps the decode rows'
        weights in GGUF's Q8_0 instead (the output head: the GGUF stores the tied token
        embeddings in 8 bits, and 4 would move every logit).

        ``kernel``: the native kernel for ``q4`` decode rows (``None``: torch's int4 kernel);
        by default :func:`native.kernel` with the settings from the environment."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown weight format {fmt!r}; choose one of {FORMATS}")
        self.fmt = fmt
        self.out_features, self.in_features = weight.shape
        w = weight.detach().to(torch.float32).contiguous()
        self._packed: object | None = None
        self.weight: torch.Tensor | None = None
        self._q4: tuple[torch.Tensor, torch.Tensor] | None = None
        # q4: a bf16 copy and the adapter beside it, (A.T [in, r], (scale * B).T [r, out]),
        # which torch's int4 weights also use where our kernel cannot be built
        self._wide: Linear | None = None
        self._wide_lora: LoRA | None = None
        # q4 with our native kernel (chatbot/engine/native.py): packed weights, LoRA (A, B.T)
        self.native: native.PackedQ4 | native.PackedQ8 | None = None
        self.native_lora: native.NativeLoRA | None = None
        self._kernel: native.Q4Kernel | None = None
        if fmt == "q4":
            # The bf16 copy holds the base weights and the adapter stays beside it in fp32,
            # as beside the 4-bit ones: merged into bf16 weights, the rounding ate enough of
            # the adapter's delta to turn "Do you ship to Canada?" into a handoff.
            self._wide = Linear(w, "bf16")
            if lora is not None:
                self._wide_lora = (lora[0].t().contiguous(), lora[1].t().contiguous())
            if self.in_features % Q4_GROUP == 0:
                # the base weights in 4 bits (8 for the head); the adapter stays beside them
                self._kernel = native.kernel() if kernel == "default" else kernel
                if self._kernel is not None:
                    self.native = native.PackedQ8(w) if decode_bits == 8 else native.PackedQ4(w)
                    if self._wide_lora is not None:
                        # A [r, in] and B.T [r, out] (shared with the bf16 copy's)
                        a_t, b_t = self._wide_lora
                        self.native_lora = native.NativeLoRA(a_t.t(), b_t)
                elif q4_available():
                    self._q4 = quantize_q4(w)
            return
        if lora is not None:
            w = w + lora[1] @ lora[0]
        if fmt == "fp32":
            self.weight = w
        elif fmt == "bf16":
            self.weight = w.to(torch.bfloat16)
            if onednn_linear_available():
                self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight)
                self.weight = None
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

    def _wide_call(self, x: torch.Tensor) -> torch.Tensor:
        """The bf16 copy (prompt chunks, big batches) plus the unmerged adapter in fp32."""
        assert self._wide is not None
        y = self._wide(x)
        if self._wide_lora is not None:
            y = torch.addmm(y, lora_down(x, self._wide_lora[0]), self._wide_lora[1])
        return y

    def _q4_call(self, x: torch.Tensor, decode_rows: int) -> torch.Tensor:
        """The first ``decode_rows`` rows through the 4-bit weights, the rest through bf16.

        The caller decides how many (Llama.forward: the decode rows while at most
        :data:`Q4_DECODE_ROWS` sequences decode). Both kernels, and the per-row LoRA, compute
        each row independently of the others in the call.
        """
        assert self._wide is not None
        if decode_rows == 0 or (self._q4 is None and self.native is None):
            return self._wide_call(x)
        head = x[:decode_rows]
        if self.native is not None:
            kern = self._kernel
            assert kern is not None
            step = kern.max_rows
            parts = [
                kern.matmul(head[i : i + step], self.native, self.native_lora)
                for i in range(0, head.shape[0], step)
            ]
            if decode_rows < x.shape[0]:
                parts.append(self._wide_call(x[decode_rows:]))
            return parts[0] if len(parts) == 1 else torch.cat(parts)
        assert self._q4 is not None
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            head.to(torch.bfloat16), self._q4[0], Q4_GROUP, self._q4[1]
        ).to(torch.float32)
        if self._wide_lora is not None:
            # Row by row: a plain mm takes another MKL kernel for one row than for
            # several, which would make a reply depend on its batch.
            a_t, b_t = self._wide_lora
            for i in range(head.shape[0]):
                torch.addmm(y[i : i + 1], head[i : i + 1] @ a_t, b_t, out=y[i : i + 1])
        if decode_rows >= x.shape[0]:
            return y
        return torch.cat([y, self._wide_call(x[decode_rows:])])

    def __call__(self, x: torch.Tensor, decode_rows: int = 0) -> torch.Tensor:
        """``y = x @ W.T``; ``decode_rows``: how many leading rows are decode steps (q4 only)."""
        if self.fmt == "q4":
            return self._q4_call(x, decode_rows)
        if self.fmt == "fp32":
            assert self.weight is not None
            return F.linear(x, self.weight)
        if self.fmt == "bf16":
            xb = x.to(torch.bfloat16)
            if self._packed is not None:
                y = torch.ops.mkldnn._linear_pointwise(xb, self._packed, None, "none", [], "")
            else:
                assert self.weight is not None
                y = F.linear(xb, self.weight)
            return y.to(torch.float32)
        if self.fmt == "fp16":
            return torch.ops.quantized.linear_dynamic_fp16(x.contiguous(), self._packed)
        # reduce_range: fbgemm's AVX2 int8 kernels can saturate with full-range activations
        return torch.ops.quantized.linear_dynamic(x.contiguous(), self._packed, True)

    @property
    def nbytes(self) -> int:
        """Approximate bytes held by the weight."""
        if self.fmt == "q4":
            assert self._wide is not None
            q4 = self.out_features * self.in_features // 2 if self._q4 is not None else 0
            if self.native is not None:
                q4 = self.native.nbytes
            lora = sum(t.numel() * 4 for t in self._wide_lora) if self._wide_lora else 0
            if self.native_lora is not None:
                lora += self.native_lora.a.numel() * 4  # A; B.T is shared
            return self._wide.nbytes + q4 + lora
        per = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}[self.fmt]
        return self.out_features * self.in_features * per
