"""The native q4 kernel (chatbot/engine/kernels/q4.c) against torch, and its fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_support import make_tiny_model

from chatbot.engine import native
from chatbot.engine.linear import Linear, q4_available
from chatbot.engine.model import KVCache, Llama, Prefill, StepPlan

kernel = native.kernel()
needs_kernel = pytest.mark.skipif(kernel is None, reason="no C compiler to build the kernel")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama-native"), seed=7)


def _q4_1_weights(n: int, k: int, seed: int) -> torch.Tensor:
    """Weights exactly representable in Q4_1 (fp16 scale and offset per 32): GGUF's values."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k // 32, 32), generator=g).float()
    d = (torch.rand(n, k // 32, 1, generator=g) * 0.02 + 1e-3).half().float()
    m = (torch.randn(n, k // 32, 1, generator=g) * 0.05).half().float()
    # keep every block's extremes at codes 0 and 15, as a Q4_1 quantizer picks them
    q[..., 0], q[..., 1] = 0, 15
    return (q * d + m).reshape(n, k)


def test_packing_q4_1_weights_is_lossless() -> None:
    w = _q4_1_weights(48, 96, seed=1)
    packed = native.PackedQ4(w)
    assert torch.equal(packed.dequantize(), w)
    assert packed.nbytes == 48 * 96 // 2 + 48 * 3 * 8  # half a byte a weight + (d, m) a block


def test_packing_rejects_a_width_that_is_not_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        native.PackedQ4(torch.zeros(4, 40))


@needs_kernel
@pytest.mark.parametrize("rows", [1, 2, 5, 8])
def test_matmul_equals_the_dequantized_product_plus_lora(rows: int) -> None:
    assert kernel is not None
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(80, 160, generator=g) * 0.1
    lora = (torch.randn(6, 160, generator=g) * 0.1, torch.randn(80, 6, generator=g) * 0.1)
    lora_t = native.NativeLoRA(lora[0], lora[1].t())  # the kernel takes B transposed
    packed = native.PackedQ4(w)
    x = torch.randn(rows, 160, generator=g)  # 5 blocks: pairs of blocks and an odd one
    exact = x.double() @ packed.dequantize().double().T
    # bf16 (AVX512-BF16) or int8 (opt-in VNNI) builds round the activations the products
    # see; the offsets use the exact block sums
    xq = native.round_activations(x, kernel.activations)
    blocks = packed.dequantize().double().reshape(80, 5, 32)
    lows = packed.dm[:, 1].double()  # [80, 5]: each block's offset m
    offsets = x.double().reshape(rows, 5, 32).sum(-1) @ lows.T
    scaled = blocks - lows[..., None]  # d * q
    want = torch.einsum("rbi,nbi->rn", xq.double().reshape(rows, 5, 32), scaled) + offsets
    torch.testing.assert_close(kernel.matmul(x, packed).double(), want, atol=1e-4, rtol=1e-5)
    # and however the activations are rounded, close to the exact product
    assert (kernel.matmul(x, packed).double() - exact).abs().max() < 0.02 * exact.abs().max()
    want = want + (x.double() @ lora[0].double().T) @ lora[1].double().T
    got = kernel.matmul(x, packed, lora_t).double()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


@needs_kernel
def test_a_rows_result_does_not_depend_on_its_batch_or_the_thread_count() -> None:
    """Drafted tokens ride in the same call as their sequence's row: they must not change it."""
    assert kernel is not None
    g = torch.Generator().manual_seed(5)
    packed = native.PackedQ4(torch.randn(200, 128, generator=g))
    lora = native.NativeLoRA(torch.randn(4, 128, generator=g), torch.randn(4, 200, generator=g))
    x = torch.randn(7, 128, generator=g)
    batch = kernel.matmul(x, packed, lora)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            for i in range(7):
                assert torch.equal(kernel.matmul(x[i : i + 1], packed, lora)[0], batch[i])
    finally:
        torch.set_num_threads(threads)


@needs_kernel
def test_matmul_rejects_bad_shapes() -> None:
    assert kernel is not None
    packed = native.PackedQ4(torch.zeros(8, 64))
    with pytest.raises(ValueError, match="bad input shape"):
        kernel.matmul(torch.zeros(1, 32), packed)
    with pytest.raises(ValueError, match="bad input shape"):
        kernel.matmul(torch.zeros(kernel.max_rows + 1, 64), packed)


@needs_kernel
def test_q4_linear_uses_the_kernel_for_decode_rows_in_chunks() -> None:
    g = torch.Generator().manual_seed(9)
    w = torch.randn(64, 96, generator=g) * 0.1
    layer = Linear(w, "q4")
    assert layer.native is not None
    x = torch.randn(20, 96, generator=g)  # more decode rows than one kernel call takes
    got = layer(x, 20)
    assert kernel is not None
    want = torch.cat([kernel.matmul(x[i : i + 8], layer.native) for i in (0, 8, 16)])
    assert torch.equal(got, want)


def _decode_logits(model: Llama, native_step: bool) -> torch.Tensor:
    """Prefill two sequences, then one step that decodes one token of the first and two
    tokens (one drafted) of the second, with or without the native step."""
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(3, model.config.vocab_size, (40,), generator=g)
    cache = KVCache(model.config, max_slots=4, max_len=128, dtype=model.kv_dtype)
    cache.reserve(3, 64)
    model.forward(ids[:30], StepPlan(prefills=[Prefill(2, 0, 30)], logit_rows=[29]), cache)
    model.forward(ids[:17], StepPlan(prefills=[Prefill(0, 0, 17)], logit_rows=[16]), cache)
    decoder = model.native_decoder
    if not native_step:
        model.native_decoder = None
    try:
        plan = StepPlan(decode_positions=[17, 30, 31], decode_slots=[0, 2, 2], logit_rows=[0, 1, 2])
        return model.forward(ids[30:33], plan, cache)
    finally:
        model.native_decoder = decoder


@needs_kernel
def test_native_decode_step_matches_the_torch_path(tiny: Path) -> None:
    """The C step computes what Llama.forward's torch ops compute for the same rows."""
    model = Llama.from_folder(tiny, "q4")
    assert model.native_decoder is not None and model.kv_dtype == torch.bfloat16
    ours, torch_path = _decode_logits(model, True), _decode_logits(model, False)
    assert ours.shape == torch_path.shape
    # bf16 keys/values and queries on both sides; only summation order differs
    assert torch.equal(ours.argmax(-1), torch_path.argmax(-1))
    assert kernel is not None
    if kernel.activations != "fp32":
        # a last-bit difference can move an activation to the next bf16 or int8 step,
        # which the following layers carry on: close, not equal
        cos = torch.nn.functional.cosine_similarity(ours, torch_path, dim=-1)
        assert cos.min().item() > 0.999
    else:
        torch.testing.assert_close(ours, torch_path, atol=0.05, rtol=0.01)


@needs_kernel
def test_native_decode_step_rejects_bad_steps(tiny: Path) -> None:
    model = Llama.from_folder(tiny, "q4")
    decoder = model.native_decoder
    assert decoder is not None
    cache = KVCache(model.config, max_slots=1, max_len=64, dtype=torch.bfloat16)
    x = torch.zeros(1, model.config.hidden_size)
    with pytest.raises(ValueError, match="rejected"):  # position past the cache
        decoder(x, [cache.capacity], [0], model.cos, model.sin, cache.k, cache.v)
    with pytest.raises(ValueError, match="rejected"):  # no such slot
        decoder(x, [0], [5], model.cos, model.sin, cache.k, cache.v)
    fp32 = KVCache(model.config, max_slots=1, max_len=64)
    with pytest.raises(ValueError, match="bf16"):
        decoder(x, [0], [0], model.cos, model.sin, fp32.k, fp32.v)


def test_disabled_kernel_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBOT_NATIVE", "0")
    native.kernel.cache_clear()
    try:
        assert native.kernel() is None
        layer = Linear(torch.randn(64, 64) * 0.1, "q4")
        assert layer.native is None
        if not q4_available():
            pytest.skip("this torch lacks the CPU int4 matmul as well")
        assert layer._q4 is not None  # torch's int4 kernel instead
        x = torch.randn(2, 64)
        cos = torch.nn.functional.cosine_similarity(layer(x, 2), layer(x, 0), dim=-1)
        assert cos.min().item() > 0.99
    finally:
        monkeypatch.delenv("CHATBOT_NATIVE")
        native.kernel.cache_clear()


def test_a_failed_build_is_reported_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.setenv("CHATBOT_CACHE_DIR", str(tmp_path))
    native.kernel.cache_clear()
    try:
        with pytest.raises(OSError, match="failed to build"):
            native.build()
        assert native.kernel() is None
        assert "native q4 kernel unavailable" in caplog.text
    finally:
        native.kernel.cache_clear()
    assert not list(tmp_path.rglob("*.so"))  # nothing half-written left in the cache


@needs_kernel
def test_build_is_cached_per_source_and_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHATBOT_CACHE_DIR", str(tmp_path))
    first = native.build()
    stamp = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == stamp
    assert native.build(force=True) == first


@needs_kernel
def test_a_block_diagonal_adapter_skips_its_zeros_without_changing_a_bit() -> None:
    """A fused q/k/v adapter's B is block-diagonal: each part's rank rows touch only that
    part's outputs. The kernel reads only those spans; the sums come out identical."""
    assert kernel is not None
    g = torch.Generator().manual_seed(21)
    packed = native.PackedQ4(torch.randn(200, 64, generator=g))
    b_t = torch.zeros(6, 200)
    b_t[0:2, 0:70] = torch.randn(2, 70, generator=g)  # part 1: outputs 0-69, rank rows 0-1
    b_t[2:6, 70:200] = torch.randn(4, 130, generator=g)  # part 2: outputs 70-199
    lora = native.NativeLoRA(torch.randn(6, 64, generator=g), b_t)
    assert lora.span.tolist() == [[0, 70], [0, 70], [70, 200], [70, 200], [70, 200], [70, 200]]
    x = torch.randn(3, 64, generator=g)
    skipping = kernel.matmul(x, packed, lora)
    lora.span = torch.tensor([[0, 200]] * 6, dtype=torch.int32)  # read every row everywhere
    assert torch.equal(kernel.matmul(x, packed, lora), skipping)
    want = x.double() @ packed.dequantize().double().T
    want += (x.double() @ lora.a.double().T) @ b_t.double()
    assert (skipping.double() - want).abs().max() < 0.02 * want.abs().max()


@needs_kernel
def test_a_kernel_with_another_interface_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The library's ABI version and struct sizes must match the ctypes mirrors."""
    assert kernel is not None
    native.check_abi(kernel.lib)  # the real one matches
    monkeypatch.setattr(native, "ABI_VERSION", native.ABI_VERSION + 1)
    with pytest.raises(native.KernelABIError, match="ABI"):
        native.Q4Kernel(kernel.path)
    monkeypatch.undo()

    class Short(native.ctypes.Structure):
        _fields_ = [("qs", native.ctypes.c_void_p)]

    monkeypatch.setattr(native, "STRUCTS", (Short, native.Q4Layer, native.Q4Decode))
    with pytest.raises(native.KernelABIError, match="Short is"):
        native.Q4Kernel(kernel.path)


def test_native_options_come_from_the_settings(tmp_path: Path) -> None:
    from chatbot.settings import Settings

    env = {
        "CHATBOT_NATIVE": "off",
        "CHATBOT_Q4_ACTIVATIONS": "INT8",
        "CHATBOT_CACHE_DIR": str(tmp_path),
        "CC": "/usr/bin/cc",
    }
    options = native.NativeOptions.from_settings(Settings.from_env(env))
    assert options == native.NativeOptions(False, True, tmp_path, "/usr/bin/cc")
    assert native.kernel(options) is None  # disabled: no build attempted
    assert not list(tmp_path.iterdir())
    default = native.NativeOptions.from_settings(Settings.from_env({}))
    assert default == native.NativeOptions()
