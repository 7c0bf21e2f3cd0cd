"""The compact Llama against the transformers reference, on a tiny random-weight model."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from engine_support import make_tiny_model

from chatbot.engine.linear import Linear, fbgemm_available, q4_available
from chatbot.engine.loader import merge_lora
from chatbot.engine.model import KVCache, Llama, ModelConfig, Prefill, StepPlan
from chatbot.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def reference(tiny: Path):  # type: ignore[no-untyped-def]
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(tiny), dtype=torch.float32).eval()


def _ids(vocab: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n,), generator=g)


def _ref_logits(reference, ids: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        return reference(ids[None]).logits[0]


def test_config_reads_hf_fields(tiny: Path) -> None:
    cfg = ModelConfig.from_hf(json.loads((tiny / "config.json").read_text()))
    assert (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (2, 4, 2, 16)
    assert cfg.rope_theta == 10000.0 and cfg.tie_embeddings


def test_config_rejects_other_architectures() -> None:
    with pytest.raises(ConfigError, match="unsupported model type"):
        ModelConfig.from_hf({"model_type": "gpt2"})


def test_prefill_logits_match_transformers(tiny: Path, reference) -> None:  # type: ignore[no-untyped-def]
    model = Llama.from_folder(tiny, "fp32")
    ids = _ids(model.config.vocab_size, 40, seed=1)
    cache = KVCache(model.config, max_slots=2, max_len=256)
    plan = StepPlan(prefills=[Prefill(0, 0, 40)], logit_rows=list(range(40)))
    ours = model.forward(ids, plan, cache)
    torch.testing.assert_close(ours, _ref_logits(reference, ids), atol=1e-4, rtol=1e-4)


def test_chunked_prefill_and_batched_decode_match_transformers(tiny: Path, reference) -> None:  # type: ignore[no-untyped-def]
    """Two sequences of different lengths: chunked prefill, then decode steps side by side."""
    model = Llama.from_folder(tiny, "fp32")
    vocab = model.config.vocab_size
    a, b = _ids(vocab, 30, seed=2), _ids(vocab, 17, seed=3)
    cache = KVCache(model.config, max_slots=4, max_len=256)
    cache.reserve(2, 64)
    # a in two chunks in slot 0, b in one chunk in slot 1 during a's second chunk
    model.forward(a[:12], StepPlan(prefills=[Prefill(0, 0, 12)], logit_rows=[11]), cache)
    plan = StepPlan(prefills=[Prefill(0, 12, 18), Prefill(1, 0, 17)], logit_rows=[17, 34])
    first = model.forward(torch.cat([a[12:], b]), plan, cache)
    torch.testing.assert_close(first[0], _ref_logits(reference, a)[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(first[1], _ref_logits(reference, b)[-1], atol=1e-4, rtol=1e-4)
    seq_a, seq_b = a.tolist(), b.tolist()
    for _ in range(5):
        nxt = first.argmax(-1)
        seq_a.append(int(nxt[0]))
        seq_b.append(int(nxt[1]))
        plan = StepPlan(decode_positions=[len(seq_a) - 1, len(seq_b) - 1], logit_rows=[0, 1])
        first = model.forward(nxt, plan, cache)
        ref_a = _ref_logits(reference, torch.tensor(seq_a))[-1]
        ref_b = _ref_logits(reference, torch.tensor(seq_b))[-1]
        torch.testing.assert_close(first[0], ref_a, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(first[1], ref_b, atol=1e-4, rtol=1e-4)


def _prompt_logits(model: Llama, reference) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """Our logits for every position of a 24-token prompt, and the reference's."""
    ids = _ids(model.config.vocab_size, 24, seed=4)
    cache = KVCache(model.config, max_slots=1, max_len=64)
    plan = StepPlan(prefills=[Prefill(0, 0, 24)], logit_rows=list(range(24)))
    return model.forward(ids, plan, cache), _ref_logits(reference, ids)


@pytest.mark.skipif(not fbgemm_available(), reason="fp16/int8 weights need fbgemm")
@pytest.mark.parametrize(("fmt", "min_cos", "atol"), [("fp16", 0.9999, 0.05), ("int8", 0.95, 3.0)])
def test_compressed_weights_stay_close(tiny: Path, reference, fmt, min_cos, atol) -> None:  # type: ignore[no-untyped-def]
    """fp16 weights are near-exact; int8 (activations quantized per call) is lossy but close."""
    ours, ref = _prompt_logits(Llama.from_folder(tiny, fmt), reference)
    cos = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
    assert cos.mean().item() > min_cos
    assert (ours - ref).abs().max().item() < atol


@pytest.mark.parametrize("packed", [True, False], ids=["onednn", "f-linear"])
def test_bf16_weights_stay_close(tiny: Path, reference, packed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """bf16 weights (oneDNN-packed, or plain F.linear where oneDNN is missing) stay close."""
    import chatbot.engine.linear as linear

    if packed and not linear.onednn_linear_available():
        pytest.skip("this torch build lacks oneDNN packed linear ops")
    monkeypatch.setattr(linear, "onednn_linear_available", lambda: packed)
    model = Llama.from_folder(tiny, "bf16")
    assert (model.layers[0].qkv._packed is not None) is packed
    ours, ref = _prompt_logits(model, reference)
    cos = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
    assert cos.mean().item() > 0.999
    assert (ours - ref).abs().max().item() < 0.5


def test_cache_move_swap_and_read_write(tiny: Path) -> None:
    model = Llama.from_folder(tiny, "fp32")
    cache = KVCache(model.config, max_slots=4, max_len=512, len_chunk=16)
    cache.reserve(3, 20)
    assert cache.capacity == 32 and cache.slots == 3
    cache.k[:, 0, :, :5] = 1.0
    cache.k[:, 1, :, :5] = 2.0
    cache.swap(0, 1, 5)
    assert cache.k[:, 0, :, :5].eq(2.0).all() and cache.k[:, 1, :, :5].eq(1.0).all()
    cache.move(0, 2, 5)
    assert cache.k[:, 2, :, :5].eq(2.0).all()
    k, v = cache.read(2, 5)
    cache.reserve(4, 40)  # growing keeps the contents
    assert cache.k[:, 2, :, :5].eq(2.0).all() and cache.capacity == 48
    cache.write(3, k, v)
    assert cache.k[:, 3, :, :5].eq(2.0).all()
    with pytest.raises(ConfigError, match="exceeds"):
        cache.reserve(5, 10)


def test_lora_merge_matches_peft(tiny: Path, tmp_path: Path) -> None:
    """Our safetensors-level merge equals peft's merge_and_unload on the same adapter."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    lcfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0
    )
    peft_model = get_peft_model(base, lcfg)
    torch.manual_seed(7)
    with torch.no_grad():  # peft initialises B to zero; make the adapter do something
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.1)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    expected = peft_model.merge_and_unload().state_dict()

    state = load_file(str(tiny / "model.safetensors"))
    merged = merge_lora(state, adapter_dir)
    assert len(merged) == 3 * 2  # three modules in each of two layers
    for name in merged:
        torch.testing.assert_close(state[name], expected[name], atol=1e-5, rtol=1e-5)
    untouched = "model.layers.0.self_attn.k_proj.weight"
    torch.testing.assert_close(state[untouched], expected[untouched])

    # and the engine's model built with the adapter gives the merged model's logits
    model = Llama.from_folder(tiny, "fp32", adapter=adapter_dir)
    ids = _ids(model.config.vocab_size, 12, seed=5)
    cache = KVCache(model.config, max_slots=1, max_len=64)
    ours = model.forward(ids, StepPlan(prefills=[Prefill(0, 0, 12)], logit_rows=[11]), cache)
    ref = LlamaForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    ref.load_state_dict(expected, strict=False)
    want = _ref_logits(ref.eval(), ids)[-1]
    torch.testing.assert_close(ours[0], want, atol=1e-4, rtol=1e-4)

    if not q4_available():
        return

    # q4 keeps the adapter unmerged beside 4-bit weights (fused q/k/v with k lacking one):
    # a decode row must follow the adapter, not just the base weights.
    def decode_logits(adapter: Path | None) -> torch.Tensor:
        m = Llama.from_folder(tiny, "q4", adapter=adapter)
        c = KVCache(m.config, max_slots=1, max_len=64)
        m.forward(ids[:11], StepPlan(prefills=[Prefill(0, 0, 11)], logit_rows=[10]), c)
        return m.forward(ids[11:], StepPlan(decode_positions=[11], logit_rows=[0]), c)[0]

    with_adapter, without = decode_logits(adapter_dir), decode_logits(None)
    err = (with_adapter - want).abs().mean().item()
    assert err < 0.5 * (without - want).abs().mean().item()
    # random Gaussian weights lose more to 4 bits than the GGUF's Q4_1 values (lossless)
    assert torch.nn.functional.cosine_similarity(with_adapter, want, dim=0).item() > 0.95


@pytest.mark.skipif(not q4_available(), reason="this torch lacks the CPU int4 matmul")
def test_q4_linear_decode_rows_and_wide_rows() -> None:
    """Decode rows run the int4 kernel plus the unmerged LoRA, the rest the merged bf16 copy,
    and a row's result does not depend on how many other rows share the call."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(96, 64, generator=g) * 0.1
    lora = (torch.randn(4, 64, generator=g) * 0.1, torch.randn(96, 4, generator=g) * 0.1)
    merged = w + lora[1] @ lora[0]
    layer = Linear(w, "q4", lora)
    x = torch.randn(16, 64, generator=g)
    want = x @ merged.t()
    for decode_rows in (0, 1, 5, 16):
        got = layer(x, decode_rows)
        assert got.shape == want.shape and got.dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
        assert cos.min().item() > 0.995, decode_rows
    four_bit, wide = layer(x, 16), layer(x, 0)
    assert not torch.equal(four_bit, wide)  # two different paths
    assert torch.equal(layer(x[:1], 1), four_bit[:1])  # batch-invariant rows
    assert torch.equal(layer(x[3:9], 0), wide[3:9])
    assert torch.equal(layer(x[:6], 2)[2:], wide[2:6])
    assert layer.nbytes < Linear(w, "fp32").nbytes


def test_lora_merge_rejects_a_folder_without_adapter(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a LoRA adapter folder"):
        merge_lora({}, tmp_path)


def test_auto_format_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: q4 with native bf16, fp16 on AVX2 (fbgemm's vector kernels), else fp32."""
    from chatbot.engine import engine, formats

    def flags(*names: str) -> None:
        monkeypatch.setattr(formats, "cpu_flags", lambda: frozenset(names))

    monkeypatch.setattr(formats, "native_bf16", lambda: False)
    flags("sse4_2", "avx2", "fma", "f16c")
    expected = "fp16" if fbgemm_available() else "fp32"
    assert engine.resolve_format("auto") == expected
    flags("sse4_2", "avx")  # no AVX2: fbgemm would run its slow reference loops
    assert engine.resolve_format("auto") == "fp32"
    assert engine.resolve_format("FP32") == "fp32"
    with pytest.raises(ConfigError, match="not one of"):
        engine.resolve_format("fp8")


def test_shared_prefix_attention_equals_attention_over_each_slot() -> None:
    """Rows whose slots share their first P keys/values: one pass over slot 0's prefix plus
    a pass over each row's own suffix gives plain masked attention over each slot."""
    import torch.nn.functional as F

    from chatbot.engine.model import shared_prefix_attention

    g = torch.Generator().manual_seed(7)
    b, nkv, rep, hd, length, prefix = 5, 2, 3, 16, 40, 23
    keys = torch.randn(b, nkv, length, hd, generator=g)
    values = torch.randn(b, nkv, length, hd, generator=g)
    keys[:, :, :prefix] = keys[0, :, :prefix]
    values[:, :, :prefix] = values[0, :, :prefix]
    q = torch.randn(b, nkv, rep, hd, generator=g)
    positions = torch.tensor([39, 30, 23, 35, 24])  # each row sees 0..its position
    mask = (torch.arange(length)[None, :] <= positions[:, None])[:, None, None, :]
    expected = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    got = shared_prefix_attention(q, keys, values, prefix, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # a different prefix in one slot would show: the shared pass only reads slot 0
    keys[3, :, :prefix] += 1.0
    assert not torch.allclose(shared_prefix_attention(q, keys, values, prefix, mask)[3],
                              F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)[3])


def test_batched_decode_with_a_shared_prefix_matches_transformers(  # type: ignore[no-untyped-def]
    tiny: Path, reference, monkeypatch
) -> None:
    """Four sequences with one 20-token system prefix decode as one batch reading the
    prefix once; each row's logits are the reference's for its own sequence."""
    import chatbot.engine.model as model_module

    calls = []
    real = model_module.shared_prefix_attention
    monkeypatch.setattr(model_module, "MIN_SHARED_PREFIX", 16)
    monkeypatch.setattr(model_module, "shared_prefix_attention",
                        lambda *a: calls.append(a[3]) or real(*a))
    model = Llama.from_folder(tiny, "fp32")
    vocab = model.config.vocab_size
    prefix = _ids(vocab, 20, seed=11)
    seqs = [torch.cat([prefix, _ids(vocab, n, seed=12 + n)]) for n in (3, 9, 5, 14)]
    cache = KVCache(model.config, max_slots=4, max_len=128)
    cache.reserve(4, 64)
    plan = StepPlan(prefills=[Prefill(i, 0, len(s)) for i, s in enumerate(seqs)])
    plan.logit_rows = list(itertools.accumulate(len(s) for s in seqs))
    plan.logit_rows = [end - 1 for end in plan.logit_rows]
    logits = model.forward(torch.cat(seqs), plan, cache)
    tokens = [s.tolist() for s in seqs]
    for _ in range(3):
        for t, row in zip(tokens, logits.argmax(-1).tolist(), strict=True):
            t.append(row)
        plan = StepPlan(decode_positions=[len(t) - 1 for t in tokens], logit_rows=[0, 1, 2, 3],
                        shared_prefix=20)
        logits = model.forward(torch.tensor([t[-1] for t in tokens]), plan, cache)
        for row, t in zip(logits, tokens, strict=True):
            expected = _ref_logits(reference, torch.tensor(t))[-1]
            torch.testing.assert_close(row, expected, atol=1e-4, rtol=1e-4)
    assert calls and set(calls) == {20}  # every layer of every step took the shared pass


def test_cache_slots_double_when_they_grow(tiny: Path) -> None:
    config = Llama.from_folder(tiny, "fp32").config
    cache = KVCache(config, max_slots=12, max_len=64, len_chunk=16)
    assert cache.slots == 1
    cache.reserve(2, 10)
    cache.reserve(3, 10)
    assert cache.slots == 4  # not 3: the next joiner needs no reallocation
    cache.reserve(9, 10)
    assert cache.slots == 9
    cache.reserve(10, 10)
    assert cache.slots == 12  # doubling stops at max_slots
