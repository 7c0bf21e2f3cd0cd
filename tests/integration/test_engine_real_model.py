"""The engine on the real pulled SmolLM2-135M-Instruct (skipped when it is not pulled)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from chatbot.engine import Engine, GenerationRequest
from chatbot.engine.model import KVCache, Llama, Prefill, StepPlan
from chatbot.settings import Settings

pytestmark = [pytest.mark.model, pytest.mark.slow]

SYSTEM = (
    "You are the shop assistant of Northwind Outfitters. Answer only from these facts.\n"
    "[returns-window] Returns are accepted within 30 days of delivery for a full refund.\n"
    "[shipping-times] Standard shipping takes 3-5 business days; express takes 1-2."
)


@pytest.fixture(scope="module")
def settings() -> Settings:
    s = Settings.from_env(adapter_path="none")
    if not (s.model_path / "config.json").is_file():
        pytest.skip(f"model not pulled at {s.model_path} (run `chatbot model pull`)")
    return s


def _prompt(tokenizer: Any, question: str) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        add_generation_prompt=True,
        tokenize=True,
    )
    return list(ids if isinstance(ids, list) else ids["input_ids"])


@pytest.fixture(scope="module")
def reference(settings: Settings):  # type: ignore[no-untyped-def]
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(settings.model_path), dtype=torch.float32).eval()


def _hf_greedy(reference, ids: list[int], n: int) -> list[int]:  # type: ignore[no-untyped-def]
    x = torch.tensor([ids])
    out = reference.generate(
        x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, eos_token_id=None
    )
    return [int(t) for t in out[0, len(ids) :]]


def test_forward_logits_match_transformers(settings: Settings, reference) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(settings.model_path))
    ids = _prompt(tok, "How long do I have to return a jacket?")
    model = Llama.from_folder(settings.model_path, "fp32")
    cache = KVCache(model.config, max_slots=1, max_len=512)
    plan = StepPlan(prefills=[Prefill(0, 0, len(ids))], logit_rows=list(range(len(ids))))
    ours = model.forward(torch.tensor(ids), plan, cache)
    with torch.inference_mode():
        ref = reference(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(ours, ref, atol=2e-3, rtol=1e-3)


def test_fp32_greedy_reply_equals_transformers(settings: Settings, reference) -> None:  # type: ignore[no-untyped-def]
    engine = Engine.load(settings.replace(engine_dtype="fp32"))
    try:
        ids = _prompt(engine.tokenizer, "How long do I have to return a jacket?")
        out = asyncio.run(engine.complete(GenerationRequest(ids, max_new_tokens=32)))
    finally:
        engine.stop()
    expected = _hf_greedy(reference, ids, 32)
    assert out.token_ids == expected[: len(out.token_ids)]
    assert "30 days" in out.text


def test_default_engine_is_deterministic_and_close_to_transformers(settings: Settings, reference):  # type: ignore[no-untyped-def]
    engine = Engine.load(settings)
    questions = ["How long does shipping take?", "Can I get a refund?"]
    try:
        prompts = [_prompt(engine.tokenizer, q) for q in questions]

        async def both() -> list[list[int]]:
            greedy = [GenerationRequest(p, max_new_tokens=40) for p in prompts]
            sampled = [
                GenerationRequest(p, max_new_tokens=40, temperature=0.7, top_p=0.9, seed=5)
                for p in prompts
            ]
            outs = await asyncio.gather(*(engine.complete(r) for r in greedy + sampled))
            return [o.token_ids for o in outs]

        first = asyncio.run(both())
        # A second run starts as a fresh process would: no prompt KV kept from the first
        # (a cached prompt's last token is recomputed alone, which changes its numerics).
        engine.scheduler.prefix_cache.clear()
        second = asyncio.run(both())
    finally:
        engine.stop()
    assert first == second  # identical replies across runs, greedy and seeded sampling
    for ids, got in zip(prompts, first[:2], strict=True):
        assert got[:8] == _hf_greedy(reference, ids, 8)


def test_drafting_speeds_a_quoting_reply_without_changing_it(settings: Settings) -> None:
    """A grounded reply quotes its fact line, so prompt-lookup drafts get accepted; the
    reply is token for token the one generated with drafting off (default weight format).

    The reply is started for the model ("Returns are accepted within") so that it quotes
    on every CPU: how the base model words a free answer depends on the weight format.
    """
    engine = Engine.load(settings)
    try:
        ids = _prompt(engine.tokenizer, "Can I get a refund?")
        ids += engine.tokenizer.encode("Returns are accepted within", add_special_tokens=False)
        runs = []
        for draft in (0, 4):
            engine.scheduler.draft_tokens = draft
            engine.scheduler.prefix_cache.clear()
            steps = engine.scheduler.steps
            out = asyncio.run(engine.complete(GenerationRequest(ids, max_new_tokens=40)))
            runs.append((out.token_ids, engine.scheduler.steps - steps))
    finally:
        engine.stop()
    assert runs[1][0] == runs[0][0]
    assert "30 days of delivery" in engine.tokenizer.decode(runs[0][0])
    assert engine.scheduler.accepted > 0 and runs[1][1] < runs[0][1]


def test_a_prompt_gets_the_same_keys_and_values_whatever_the_cache_holds(
    settings: Settings,
) -> None:
    """On the real model (where torch's prompt matmuls do change with their row count): a
    prompt's keys/values are the same cold, beside other prompts, and after prompts that
    left a prefix of it in the cache, one ending inside a piece (issue #16)."""
    from tests.unit.test_engine_invariance import END, _prompt_kv

    model = Llama.from_folder(settings.model_path, "q4")
    if model.native_decoder is None:
        pytest.skip("no native q4 kernel on this machine")
    g = torch.Generator().manual_seed(4)

    def ids(n: int) -> list[int]:
        return [int(t) for t in torch.randint(3, model.config.vocab_size, (n,), generator=g)]

    system = ids(150) + [END]
    prompts = [system + ids(n) for n in (40, 130)]
    cold = [_prompt_kv(model, [p], [])[0] for p in prompts]
    batched = _prompt_kv(model, prompts, [])
    inside = _prompt_kv(model, prompts, [system[:100] + ids(20)])  # a hit ending mid-piece
    whole = _prompt_kv(model, prompts, [system + ids(30)])  # the whole system message
    for runs in zip(cold, batched, inside, whole, strict=True):
        for kv in zip(*runs, strict=True):
            assert all(torch.equal(kv[0], other) for other in kv[1:])
