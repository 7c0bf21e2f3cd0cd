"""Continuous batching through the public Engine API, on a tiny random-weight Llama.

Every test compares against a reference that cannot share the bug under test: greedy
output of ``transformers``' generate, or the same request run alone on a fresh engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_support import make_tiny_model, prompt_ids

from chatbot.engine import Engine, GenerationRequest
from chatbot.engine.model import KVCache, Llama, ModelConfig, StepPlan
from chatbot.engine.tokens import reply_text
from chatbot.errors import GenerationError
from chatbot.settings import Settings

SYSTEM = (
    "You are the shop assistant of Northwind Outfitters. Answer from these facts only.\n"
    "[returns-window] Returns are accepted within 30 days of delivery.\n"
    "[shipping-times] Standard shipping takes 3-5 business days."
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def model(tiny: Path) -> Llama:
    return Llama.from_folder(tiny, "fp32")


@pytest.fixture(scope="module")
def tokenizer(tiny: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny))


def _engine(model: Llama, tokenizer: Any, **kw: Any) -> Engine:
    return Engine(model, tokenizer, **kw)


@pytest.fixture
def engine(model: Llama, tokenizer: Any) -> Iterator[Engine]:
    eng = _engine(model, tokenizer, max_batch=8, prefill_chunk=16)
    yield eng
    eng.stop()


async def _solo(model: Llama, tokenizer: Any, request: GenerationRequest) -> list[int]:
    """The request alone on a fresh engine (no cache, no neighbours)."""
    eng = _engine(model, tokenizer, max_batch=1, prefill_chunk=512)
    try:
        return (await eng.complete(request)).token_ids
    finally:
        await eng.close()


def _req(tokenizer: Any, question: str, **kw: Any) -> GenerationRequest:
    return GenerationRequest(prompt_ids=prompt_ids(tokenizer, SYSTEM, question), **kw)


# Logits closer than this may come out in either order on another CPU (its kernels sum in
# another order): the tiny model's 49k-token vocabulary has top-2 gaps down to ~3e-4, while
# the engine and transformers differ by ~1e-5. A wrong pick is typically off by ~1.
NEAR_TIE = 1e-3


async def test_greedy_equals_transformers_generate(tiny: Path, engine: Engine, tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Every greedy pick is transformers' argmax on the same tokens, up to a near-tie (which
    rounding may break either way), and the reply equals generate's up to the first one."""
    from transformers import LlamaForCausalLM

    request = _req(tokenizer, "How long do returns take?", max_new_tokens=24)
    out = await engine.complete(request)
    ref = LlamaForCausalLM.from_pretrained(str(tiny), dtype=torch.float32).eval()
    ids = torch.tensor([request.prompt_ids])
    # an explicit mask: the prompt holds <|im_end|>, which generate would take for padding
    expected = ref.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=24,
        do_sample=False,
        eos_token_id=None,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert out.finish_reason == "length" and len(out.token_ids) == 24
    gaps = [float(g[0] - g[1]) for g in (s[0].topk(2).values for s in expected.scores)]
    first_tie = next((i for i, gap in enumerate(gaps) if gap < NEAR_TIE), len(gaps))
    assert out.token_ids[:first_tie] == expected.sequences[0, ids.shape[1] :].tolist()[:first_tie]
    # teacher-forced on the engine's own reply: each pick is (within a near-tie) the argmax
    with torch.no_grad():
        full = torch.tensor([request.prompt_ids + out.token_ids])
        logits = ref(full).logits[0, ids.shape[1] - 1 : -1]
    picked = logits.gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
    assert (picked >= logits.amax(-1) - NEAR_TIE).all()
    assert out.text == reply_text(tokenizer, out.token_ids)


async def test_streams_join_and_leave_between_steps(engine: Engine, model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Requests of different lengths join mid-flight; each equals its solo output."""
    requests = [
        _req(tokenizer, q, max_new_tokens=n)
        for q, n in [("Where is my order?", 30), ("Can I return shoes?", 7), ("Hi", 18)]
    ]
    order: list[int] = []
    # request 1 joins after request 0's 3rd token, request 2 after its 10th
    joined = {1: asyncio.Event(), 2: asyncio.Event()}

    async def run(i: int) -> list[int]:
        if i in joined:
            await joined[i].wait()
        ids = []
        async for event in engine.stream_events(requests[i]):
            if event.token_id >= 0:
                ids.append(event.token_id)
                order.append(i)
                if i == 0 and len(ids) == 3:
                    joined[1].set()
                if i == 0 and len(ids) == 10:
                    joined[2].set()
        return ids

    results = await asyncio.gather(run(0), run(1), run(2))
    for request, got in zip(requests, results, strict=True):
        assert got == await _solo(model, tokenizer, request)
    # the later requests produced tokens while the first was still running
    last_of_first = max(i for i, who in enumerate(order) if who == 0)
    assert order.index(1) < last_of_first and order.index(2) < last_of_first
    assert engine.scheduler.active == [] and engine.scheduler.waiting == []


async def test_many_concurrent_requests_all_match_solo(model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    """More requests than slots: they wait, join, finish in any order, slots get reused."""
    eng = _engine(model, tokenizer, max_batch=3, prefill_chunk=24)
    questions = ["a", "where", "shipping?", "refund", "size chart", "hello there"]
    reqs = [_req(tokenizer, q, max_new_tokens=5 + 3 * i) for i, q in enumerate(questions)]
    try:
        outs = await asyncio.gather(*(eng.complete(r) for r in reqs))
    finally:
        await eng.close()
    for r, out in zip(reqs, outs, strict=True):
        assert out.token_ids == await _solo(model, tokenizer, r)


async def test_cancel_frees_the_slot_within_one_step(engine: Engine, tokenizer) -> None:  # type: ignore[no-untyped-def]
    keep_busy = asyncio.create_task(engine.complete(_req(tokenizer, "long", max_new_tokens=60)))
    request = _req(tokenizer, "cancel me", max_new_tokens=60)
    stream = engine.stream(request)
    got = [await stream.__anext__() for _ in range(3)]
    assert all(got)
    seq = next(s for s in engine.scheduler.active if s.tokens[: s.prompt_len] == request.prompt_ids)
    steps_at_cancel = engine.scheduler.steps
    await stream.aclose()
    while seq.finished_step < 0:
        await asyncio.sleep(0.005)
    # the step already running may finish; the one after it no longer has the sequence
    assert seq.finished_step - steps_at_cancel <= 1
    assert seq.finish_reason == "cancelled" and seq.n_generated < 60
    assert seq not in engine.scheduler.active
    await keep_busy


async def test_task_cancellation_stops_generation(engine: Engine, tokenizer) -> None:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    async def consume() -> None:
        async for piece in engine.stream(_req(tokenizer, "x", max_new_tokens=200)):
            seen.append(piece)

    task = asyncio.create_task(consume())
    while len(seen) < 2:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if not engine.scheduler.active:
            break
        await asyncio.sleep(0.005)
    assert not engine.scheduler.active and len(seen) < 200


async def test_stop_sequence_ends_the_reply_before_it(engine: Engine, tokenizer) -> None:  # type: ignore[no-untyped-def]
    full = await engine.complete(_req(tokenizer, "stop test", max_new_tokens=30))
    text = full.text
    assert len(text) > 12
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    out = await engine.complete(_req(tokenizer, "stop test", max_new_tokens=30, stop=(stop,)))
    assert out.text == text[: text.index(stop)]
    assert out.finish_reason == "stop"
    assert len(out.token_ids) < len(full.token_ids)


async def test_eos_ends_the_reply_without_its_text(model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    request = _req(tokenizer, "eos", max_new_tokens=20)
    solo = await _solo(model, tokenizer, request)
    eos = solo[5]
    eng = _engine(model, tokenizer, eos_token_ids=(eos,))
    try:
        out = await eng.complete(request)
    finally:
        await eng.close()
    assert out.finish_reason == "stop"
    assert out.token_ids == solo[: solo.index(eos) + 1]
    # the text of the tokens before EOS (whichever tokens this CPU's rounding picked)
    assert out.text == reply_text(tokenizer, solo[: solo.index(eos)])


async def test_max_new_tokens(engine: Engine, tokenizer) -> None:  # type: ignore[no-untyped-def]
    for n in (1, 9):
        out = await engine.complete(_req(tokenizer, "count", max_new_tokens=n))
        assert len(out.token_ids) == n and out.finish_reason == "length"


async def test_sampling_is_deterministic_under_a_seed(engine: Engine, tokenizer) -> None:  # type: ignore[no-untyped-def]
    def sampled(seed: int) -> GenerationRequest:
        return _req(tokenizer, "tell me", max_new_tokens=20, temperature=1.0, top_p=0.9, seed=seed)

    alone = await engine.complete(sampled(11))
    together = await asyncio.gather(
        engine.complete(sampled(11)), engine.complete(sampled(12)), engine.complete(sampled(11))
    )
    assert together[0].token_ids == alone.token_ids == together[2].token_ids
    assert together[1].token_ids != alone.token_ids
    greedy = await engine.complete(_req(tokenizer, "tell me", max_new_tokens=20))
    assert greedy.token_ids != alone.token_ids


async def test_chunked_prefill_keeps_running_streams_flowing(model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    eng = _engine(model, tokenizer, prefill_chunk=8)
    long_question = "Please tell me everything about your shipping and returns. " * 6
    newcomer = _req(tokenizer, long_question, max_new_tokens=4)
    events: list[str] = []
    cached: list[int] = []
    try:
        runner_started = asyncio.Event()

        async def runner() -> None:
            async for ev in eng.stream_events(_req(tokenizer, "run", max_new_tokens=80)):
                if ev.token_id >= 0:
                    events.append("run")
                    runner_started.set()

        async def late() -> list[int]:
            await runner_started.wait()
            events.append("submit")
            ids: list[int] = []
            async for ev in eng.stream_events(newcomer):
                if ev.token_id >= 0:
                    if not ids:
                        events.append("first")
                        cached.append(ev.cached_tokens)
                    ids.append(ev.token_id)
            return ids

        _, got = await asyncio.gather(runner(), late())
    finally:
        await eng.close()
    during = events[events.index("submit") : events.index("first")].count("run")
    # the shared system prompt came from the runner's cached prompt; the rest is chunked
    to_prefill = len(newcomer.prompt_ids) - cached[0]
    assert cached[0] > 30 and to_prefill > 60
    # the running stream got a token in (nearly) every step of the newcomer's prefill
    assert during >= -(-to_prefill // 8) - 1
    assert got == await _solo(model, tokenizer, newcomer)


async def test_prefix_cache_hit_gives_the_same_output(engine: Engine, model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    first = await engine.complete(_req(tokenizer, "Do you ship to Canada?", max_new_tokens=12))
    assert first.cached_tokens == 0
    second_req = _req(tokenizer, "What is the returns window?", max_new_tokens=12)
    second = await engine.complete(second_req)
    shared = 0
    first_ids = _req(tokenizer, "Do you ship to Canada?").prompt_ids
    for a, b in zip(first_ids, second_req.prompt_ids, strict=False):
        if a != b:
            break
        shared += 1
    assert second.cached_tokens == shared > 30
    assert second.token_ids == await _solo(model, tokenizer, second_req)


@pytest.mark.parametrize("fmt", ["fp32", "q4"])
async def test_a_prompt_asked_again_starts_with_no_forward_pass(  # type: ignore[no-untyped-def]
    tiny: Path, tokenizer, fmt: str
) -> None:
    """The same prompt again (another shopper, the same question and facts) is answered from
    the prefix cache's keys/values and logits: no prompt token is computed, and the reply
    is the one the first asker got, greedy or sampled under the same seed."""
    model = Llama.from_folder(tiny, fmt)
    greedy = _req(tokenizer, "Do you ship to Canada?", max_new_tokens=12)
    sampled = _req(tokenizer, "Do you ship to Canada?", max_new_tokens=12, temperature=0.9,
                   seed=7)
    eng = _engine(model, tokenizer)
    computed: list[int] = []
    real_run = eng.scheduler.runner.run
    eng.scheduler.runner.run = lambda tokens, plan, cache: (  # type: ignore[method-assign]
        computed.append(sum(p.length for p in plan.prefills)) or real_run(tokens, plan, cache))
    try:
        first = await eng.complete(greedy)
        prompt_tokens = sum(computed)
        again = await eng.complete(greedy)
        assert sum(computed) == prompt_tokens  # the second ask computed no prompt token
        assert eng.scheduler.whole_hits == 1
        assert again.cached_tokens == len(greedy.prompt_ids)
        assert again.token_ids == first.token_ids == await _solo(model, tokenizer, greedy)
        one = await eng.complete(dataclasses.replace(greedy, max_new_tokens=1))
        assert one.token_ids == first.token_ids[:1] and one.finish_reason == "length"
        assert (await eng.complete(sampled)).token_ids == await _solo(model, tokenizer, sampled)
        assert (await eng.complete(sampled)).token_ids == await _solo(model, tokenizer, sampled)
        assert eng.scheduler.whole_hits == 4  # the same prompt, sampled, starts there too
        # Several at once: all start from the cache, in one admission.
        replies = await asyncio.gather(*(eng.complete(greedy) for _ in range(5)))
        assert all(r.token_ids == first.token_ids for r in replies)
    finally:
        await eng.close()


async def test_a_conversations_entry_serves_the_same_prompt_in_another(  # type: ignore[no-untyped-def]
    engine: Engine, model, tokenizer
) -> None:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello"}]
    ids = _chat(tokenizer, msgs)
    first = await engine.complete(GenerationRequest(ids, max_new_tokens=10, cache_key="a"))
    other = await engine.complete(GenerationRequest(ids, max_new_tokens=10, cache_key="b"))
    assert engine.scheduler.whole_hits == 1 and other.cached_tokens == len(ids)
    assert other.token_ids == first.token_ids


async def test_conversation_cache_reuses_the_previous_turn(
    engine: Engine, model, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello"}]
    turn1 = GenerationRequest(
        prompt_ids=_chat(tokenizer, msgs), max_new_tokens=10, cache_key="conv-1"
    )
    out1 = await engine.complete(turn1)
    msgs += [
        {"role": "assistant", "content": out1.text},
        {"role": "user", "content": "And shipping?"},
    ]
    turn2 = GenerationRequest(
        prompt_ids=_chat(tokenizer, msgs), max_new_tokens=10, cache_key="conv-1"
    )
    out2 = await engine.complete(turn2)
    assert out2.cached_tokens >= len(turn1.prompt_ids)
    assert out2.token_ids == await _solo(model, tokenizer, turn2)


def _chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"prompt_ids": []}, "empty"),
        ({"prompt_ids": [1, -5]}, "token ids"),
        ({"prompt_ids": [1] * 5000}, "exceeds the context"),
        ({"prompt_ids": [1, 2], "max_new_tokens": 0}, "max_new_tokens"),
        ({"prompt_ids": [1, 2], "top_p": 0.0}, "top_p"),
    ],
)
async def test_bad_requests_raise_generation_error(engine: Engine, kw, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GenerationError, match=match):
        await engine.complete(GenerationRequest(**kw))


async def test_engine_load_from_settings(tiny: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_env(
        {}, data_dir=tiny.parent, model_path=tiny, adapter_path="none", engine_dtype="fp32"
    )
    eng = Engine.load(settings)
    assert not eng.ready
    await eng.start()
    assert eng.ready
    pieces = [p async for p in eng.stream(_req(tokenizer, "hi", max_new_tokens=6))]
    assert pieces and all(isinstance(p, str) for p in pieces)
    await eng.close()
    assert not eng.ready


def test_draft_is_what_followed_the_latest_earlier_occurrence(model) -> None:  # type: ignore[no-untyped-def]
    from chatbot.engine.scheduler import SamplingParams, Scheduler, Sequence

    sched = Scheduler(model, draft_tokens=4)

    def seq(tokens: list[int], **kw: Any) -> Sequence:
        s = Sequence(
            1,
            3,
            tokens,
            SamplingParams(max_new_tokens=kw.pop("max_new", 50), **kw),
            sink=lambda *a: False,
        )
        s.draft_len = 4
        return s

    # the last three tokens (7 8 9) occurred twice: the newest occurrence wins
    assert sched._draft(seq([7, 8, 9, 1, 2, 7, 8, 9, 3, 4, 5, 6, 7, 8, 9])) == [3, 4, 5, 6]
    # only the last two (8 9) occurred before
    assert sched._draft(seq([8, 9, 5, 6, 1, 8, 9])) == [5, 6, 1, 8]
    assert sched._draft(seq([1, 2, 3, 4, 5])) == []  # nothing repeats
    assert sched._draft(seq([7, 8, 9, 1, 2, 7, 8, 9], temperature=0.7)) == []  # sampling
    # never past max_new_tokens: 5 of 7 generated, room for 1 draft token + the model's own
    assert sched._draft(seq([7, 8, 9, 1, 2, 7, 8, 9], max_new=7)) == [1]
    short = seq([7, 8, 9, 1, 2, 7, 8, 9])
    short.draft_len = 2  # after a rejection the next draft is shorter
    assert sched._draft(short) == [1, 2]


async def test_rejected_drafts_leave_the_reply_alone(model, tokenizer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Every draft wrong (the next token id plus one): each step still yields the model's
    own token, and the reply is the one generated with drafting off."""
    from chatbot.engine.scheduler import Scheduler

    request = _req(tokenizer, "wrong drafts", max_new_tokens=24)
    solo = await _solo(model, tokenizer, request)
    prompt_len = len(request.prompt_ids)

    def wrong(self: Scheduler, seq: Any) -> list[int]:
        done = len(seq.tokens) - prompt_len
        return [(t + 1) % model.config.vocab_size for t in solo[done : done + 3]]

    monkeypatch.setattr(Scheduler, "_draft", wrong)
    eng = _engine(model, tokenizer, draft_tokens=4)
    try:
        out = await eng.complete(request)
    finally:
        await eng.close()
    assert out.token_ids == solo
    assert eng.scheduler.drafted > 0 and eng.scheduler.accepted == 0


@pytest.mark.parametrize("fmt", ["fp32", "q4"])
async def test_a_perfect_draft_is_kept_and_cut_by_eos_and_length(  # type: ignore[no-untyped-def]
    tiny: Path, tokenizer, monkeypatch, fmt: str
) -> None:
    """Drafts that are exactly the greedy continuation are all kept, five tokens a step, and
    the reply is the one generated without drafts; a draft that runs past the end of text
    or max_new_tokens is cut where generation without drafts would stop."""
    from chatbot.engine.scheduler import Scheduler

    model = Llama.from_folder(tiny, fmt)
    request = _req(tokenizer, "perfect drafts", max_new_tokens=30)
    solo = await _solo(model, tokenizer, request)
    prompt_len = len(request.prompt_ids)

    def oracle(self: Scheduler, seq: Any) -> list[int]:  # the true next tokens, 4 at a time
        done = len(seq.tokens) - prompt_len
        return solo[done : done + 4]

    monkeypatch.setattr(Scheduler, "_draft", oracle)
    eng = _engine(model, tokenizer, draft_tokens=4)
    try:
        out = await eng.complete(request)
        assert out.token_ids == solo and out.finish_reason == "length"
        assert eng.scheduler.accepted == eng.scheduler.drafted > 0
        assert eng.scheduler.steps <= 1 + -(-30 // 5) + 1  # prefill, then 5 tokens a step
        short = await eng.complete(_req(tokenizer, "perfect drafts", max_new_tokens=7))
        assert short.token_ids == solo[:7] and short.finish_reason == "length"
    finally:
        await eng.close()
    eos = solo[9]
    eng = _engine(model, tokenizer, draft_tokens=4, eos_token_ids=(eos,))
    try:
        out = await eng.complete(request)
    finally:
        await eng.close()
    assert out.finish_reason == "stop" and out.token_ids == solo[: solo.index(eos) + 1]


def test_shared_prefix_is_the_common_cached_start_of_the_decoding_sequences() -> None:
    from chatbot.engine.scheduler import SamplingParams, Sequence, shared_prefix_length

    def seq(tokens: list[int], cached: int) -> Sequence:
        s = Sequence(1, len(tokens), tokens, SamplingParams(), sink=lambda *a: False)
        s.n_cached = cached
        return s

    a = seq([1, 2, 3, 4, 5, 6], 6)
    b = seq([1, 2, 3, 4, 9, 9, 9], 7)
    assert shared_prefix_length([a, b]) == 4
    assert shared_prefix_length([a, seq([1, 2, 3, 4, 5, 6, 7], 2)]) == 2  # not past a cache
    assert shared_prefix_length([a, seq([8, 2, 3], 3)]) == 0
    assert shared_prefix_length([]) == 0


async def test_a_batch_sharing_its_system_prompt_matches_solo_replies(  # type: ignore[no-untyped-def]
    model, tokenizer, monkeypatch
) -> None:
    """Five conversations with one system prompt decode together through the shared-prefix
    attention (asserted), and each reply is the one it gets alone."""
    import chatbot.engine.model as model_module

    prefixes: list[int] = []
    real = model_module.shared_prefix_attention
    monkeypatch.setattr(model_module, "shared_prefix_attention",
                        lambda *a: prefixes.append(a[3]) or real(*a))
    eng = _engine(model, tokenizer, max_batch=8, prefill_chunk=512, draft_tokens=0)
    reqs = [_req(tokenizer, q, max_new_tokens=8) for q in ("a", "b?", "refund", "size", "hi")]
    try:
        outs = await asyncio.gather(*(eng.complete(r) for r in reqs))
    finally:
        await eng.close()
    assert prefixes and min(prefixes) >= model_module.MIN_SHARED_PREFIX
    for r, out in zip(reqs, outs, strict=True):
        assert out.token_ids == await _solo(model, tokenizer, r)


class _Scripted:
    """Stands in for :class:`Llama`: its greedy pick after position p is ``script[p + 1 -
    prompt_len]``, on every CPU. For replies whose exact tokens matter."""

    format = "fp32"
    kv_dtype = torch.float32
    native_decoder = None

    def __init__(self, vocab: int, prompt_len: int, script: list[int]) -> None:
        self.config = ModelConfig(
            vocab_size=vocab, hidden_size=8, intermediate_size=8, n_layers=1, n_heads=1,
            n_kv_heads=1, head_dim=8, rms_eps=1e-5, rope_theta=1e4, max_positions=256,
            tie_embeddings=True,
        )  # fmt: skip
        self.prompt_len, self.script = prompt_len, script

    def forward(self, tokens: torch.Tensor, plan: StepPlan, cache: KVCache) -> torch.Tensor:
        positions = list(plan.decode_positions)
        for pf in plan.prefills:
            positions.extend(range(pf.start, pf.start + pf.length))
        logits = torch.zeros(len(plan.logit_rows), self.config.vocab_size)
        for i, row in enumerate(plan.logit_rows):
            at = min(positions[row] + 1 - self.prompt_len, len(self.script) - 1)
            logits[i, self.script[at]] = 1.0
        return logits


@pytest.mark.parametrize("end", ["length", "eos"])
async def test_a_reply_ending_mid_character_ends_on_its_last_whole_one(tokenizer, end: str) -> None:  # type: ignore[no-untyped-def]
    """A reply cut inside a character (by max_new_tokens, or end of text right after a lead
    byte): stream and final text both drop the partial character, where tokenizer.decode
    shows U+FFFD (the rule of chatbot.engine.tokens.reply_text)."""
    text = "Café 東京 ✓ 🎉 ok"
    ids = tokenizer.encode(text, add_special_tokens=False)
    cut = max(k for k in range(1, len(ids)) if tokenizer.decode(ids[:k]).endswith("\ufffd"))
    reply = ids[:cut]
    prompt = [ids[0]] * 5
    script = reply + [tokenizer.eos_token_id] if end == "eos" else reply + ids[cut:]
    eng = Engine(_Scripted(len(tokenizer), len(prompt), script), tokenizer)  # type: ignore[arg-type]
    request = GenerationRequest(prompt_ids=prompt, max_new_tokens=cut if end == "length" else 40)
    try:
        out = await eng.complete(request)
        pieces = [piece async for piece in eng.stream(request)]
    finally:
        await eng.close()
    assert out.token_ids[:cut] == reply
    assert out.finish_reason == ("length" if end == "length" else "stop")
    expected = tokenizer.decode(reply)[:-1]  # the U+FFFD of the cut character dropped
    assert not expected.endswith("\ufffd") and text.startswith(expected)
    assert out.text == "".join(pieces) == expected == reply_text(tokenizer, out.token_ids)
