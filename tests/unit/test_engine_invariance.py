"""Which kernels a step gets with batch invariance on (the default) and off."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from chatbot.engine.model import Prefill, StepPlan, choose_kernels


@dataclass
class FakeDecoder:
    max_rows: int = 16

    @staticmethod
    def supports(k_cache: torch.Tensor) -> bool:
        return k_cache.dtype == torch.bfloat16


@dataclass
class FakeModel:
    batch_invariant: bool
    format: str = "q4"
    native_decoder: FakeDecoder | None = None


def _plan(sequences: int) -> StepPlan:
    return StepPlan(
        decode_positions=[10] * sequences,
        decode_slots=list(range(sequences)),
        prefills=[Prefill(slot=sequences, start=0, length=64)],
    )


CACHE = torch.zeros(1, dtype=torch.bfloat16)


def test_invariant_steps_run_every_row_through_the_native_kernel() -> None:
    model = FakeModel(batch_invariant=True, native_decoder=FakeDecoder())
    for sequences in (1, 4, 9, 20):
        kernels = choose_kernels(model, _plan(sequences), CACHE)
        assert kernels.native_decode and kernels.q4_rows == sequences


def test_without_invariance_many_sequences_take_the_bf16_copy() -> None:
    model = FakeModel(batch_invariant=False, native_decoder=FakeDecoder())
    assert choose_kernels(model, _plan(4), CACHE).native_decode
    many = choose_kernels(model, _plan(9), CACHE)
    assert not many.native_decode and many.q4_rows == 0


def test_prompt_pieces_run_on_one_thread_unless_several_share_a_checked_pass() -> None:
    from chatbot.engine.model import PIECE_THREADS

    model = FakeModel(batch_invariant=True, native_decoder=FakeDecoder())
    decode_only = StepPlan(decode_positions=[10], decode_slots=[0])
    assert choose_kernels(model, decode_only, CACHE, 2).piece_threads == 0
    assert choose_kernels(model, _plan(2), CACHE, 2).piece_threads == PIECE_THREADS
    big = StepPlan(prefills=[Prefill(0, 0, 64), Prefill(1, 0, 40)])
    assert choose_kernels(model, big, CACHE, 2).piece_threads == PIECE_THREADS
    model.pieces_together, model.piece_threads = True, 2  # type: ignore[attr-defined]
    assert choose_kernels(model, _plan(2), CACHE, 2).piece_threads == PIECE_THREADS
    assert choose_kernels(model, big, CACHE, 2).piece_threads == 2


def test_settings_read_the_switch() -> None:
    from chatbot.settings import Settings

    assert Settings.from_env({}).engine_batch_invariant
    assert not Settings.from_env({"CHATBOT_ENGINE_BATCH_INVARIANT": "0"}).engine_batch_invariant


# -- prompt pieces ------------------------------------------------------------------------

END = 2  # <|im_end|> in SmolLM2's vocabulary (and the tiny test tokenizer's)


def _pieces(tokens: list[int]) -> list[tuple[int, int]]:
    from chatbot.engine.model import prompt_piece_end, system_prompt_end

    out, at = [], 0
    system_end = system_prompt_end(tokens, {END})
    while at < len(tokens):
        end = prompt_piece_end(at, len(tokens), system_end)
        out.append((at, end))
        at = end
    return out


def test_a_piece_is_at_most_64_tokens_and_the_system_message_end_closes_one() -> None:
    system = [5] * 150 + [END]  # a 151-token system message
    user = [7] * 70
    assert _pieces(system + user) == [(0, 64), (64, 128), (128, 151), (151, 215), (215, 221)]
    # later message ends (the shopper's, then the assistant header) do not cut a piece
    header = [1, 9, 4]
    assert _pieces(system + user + [END] + header) == [
        (0, 64), (64, 128), (128, 151), (151, 215), (215, 225)
    ]  # fmt: skip
    assert _pieces([9] * 10) == [(0, 10)]
    assert _pieces([5] * 63 + [END] + [6] * 3) == [(0, 64), (64, 67)]


def test_two_prompts_sharing_a_prefix_cut_it_into_the_same_pieces() -> None:
    """Where a piece ends depends only on the tokens before it: whatever follows the shared
    system prompt, the pieces inside the shared part are the same, so a cache hit can be
    reused up to any piece end in it."""
    import random

    from chatbot.engine.model import prompt_piece_floor, system_prompt_end

    rng = random.Random(3)
    for _ in range(200):
        shared = [rng.choice([END, 4, 5, 6]) if rng.random() < 0.05 else 5
                  for _ in range(rng.randrange(1, 300))]  # fmt: skip
        a = shared + [rng.randrange(3, 9) for _ in range(rng.randrange(1, 120))]
        b = shared + [rng.randrange(3, 9) for _ in range(rng.randrange(1, 120))]
        n = len(shared)
        in_a = [p for p in _pieces(a) if p[1] <= n]
        in_b = [p for p in _pieces(b) if p[1] <= n]
        assert in_a == in_b
        floor = prompt_piece_floor(n, len(a), system_prompt_end(a, {END}))
        assert floor == (in_a[-1][1] if in_a else 0)
        assert floor == prompt_piece_floor(n, len(b), system_prompt_end(b, {END}))


def test_a_cache_hit_serves_only_what_its_donor_computed_as_a_prompt() -> None:
    """A conversation's entry holds its reply too, whose keys/values came from the decode
    kernel: a later prompt may reuse only the donor's prompt part."""
    from chatbot.engine.prefix_cache import PrefixCache

    cache = PrefixCache(1 << 20, min_hit=1)
    k = v = torch.zeros(1, 1, 30, 2)
    cache.store(tuple(range(30)), k, v, key="conv-1", prompt_len=20)
    hit = cache.lookup(list(range(28)) + [99])
    assert hit is not None and hit.length == 28 and hit.prompt_len == 20
    cache.store(tuple(range(100, 130)), k, v, key=None)
    hit = cache.lookup(list(range(100, 125)))
    assert hit is not None and hit.prompt_len == 30


@pytest.fixture(scope="module")
def tiny_q4(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from engine_support import make_tiny_model

    from chatbot.engine import native
    from chatbot.engine.model import Llama

    if native.kernel() is None:
        pytest.skip("no native q4 kernel on this machine (no C compiler)")
    model = Llama.from_folder(make_tiny_model(tmp_path_factory.mktemp("tiny-q4"), seed=5), "q4")
    assert model.native_decoder is not None
    return model


def _prompt_kv(model: Any, prompts: list[list[int]], warm: list[list[int]]) -> list[Any]:
    """Run ``warm`` (one at a time) then ``prompts`` (all at once) through a fresh scheduler
    with batch invariance; the keys/values of each of ``prompts`` when its first token came."""
    from chatbot.engine.scheduler import SamplingParams, Scheduler, Sequence

    sched = Scheduler(model, max_batch=8, max_len=512, eos_token_ids=(END,), draft_tokens=0)
    assert sched.aligned_prefill
    kv: dict[int, Any] = {}

    def sink(seq: Sequence, token: int, finish: str | None) -> bool:
        if seq.id not in kv:  # the first token: the slot holds exactly the prompt
            k, v = sched.cache.read(seq.slot, seq.prompt_len)
            kv[seq.id] = (k.clone(), v.clone())
        return False

    def run(batch: list[list[int]]) -> list[Any]:
        seqs = [sched.submit(p, SamplingParams(max_new_tokens=3), sink) for p in batch]
        while any(s.finish_reason is None for s in seqs):
            sched.step()
        return [kv[s.id] for s in seqs]

    for p in warm:
        run([p])
    return run(prompts)


def test_a_prompt_gets_the_same_keys_and_values_cold_warm_and_batched(tiny_q4: Any) -> None:
    """The whole point of the pieces: a prompt's keys/values (what its reply is computed
    from) are bit for bit the same whether it runs alone on a cold engine, beside other
    prompts, or after another prompt with the same system message filled the cache."""
    g = torch.Generator().manual_seed(2)
    vocab = tiny_q4.config.vocab_size

    def ids(n: int) -> list[int]:
        return [int(t) for t in torch.randint(3, vocab, (n,), generator=g)]

    system = ids(100) + [END]
    prompts = [system + ids(n) for n in (40, 90, 7)]
    cold = [_prompt_kv(tiny_q4, [p], [])[0] for p in prompts]
    batched = _prompt_kv(tiny_q4, prompts, [])
    warm = _prompt_kv(tiny_q4, prompts, [system[:80] + ids(50)])
    warm2 = _prompt_kv(tiny_q4, prompts, [system + ids(30)])
    for c, b, w, w2 in zip(cold, batched, warm, warm2, strict=True):
        for x, y, z, z2 in zip(c, b, w, w2, strict=True):
            assert torch.equal(x, y) and torch.equal(x, z) and torch.equal(x, z2)


def test_pieces_in_one_pass_give_each_prompt_the_same_keys_and_values(tiny_q4: Any) -> None:
    """Where the load-time check finds a step's prompt pieces exact in one pass, running
    them together changes nothing: a prompt alone on a cold engine gets, bit for bit, what
    it gets batched with three others (pieces of several prompts in each pass), after a
    prefix-cache hit, and on one thread."""
    from chatbot.engine.model import piece_mode

    together, threads = piece_mode(tiny_q4)
    if not together:
        pytest.skip("this CPU's kernels change a row with the rows beside it: one at a time")
    g = torch.Generator().manual_seed(3)
    vocab = tiny_q4.config.vocab_size

    def ids(n: int) -> list[int]:
        return [int(t) for t in torch.randint(3, vocab, (n,), generator=g)]

    system = ids(70) + [END]
    prompts = [system + ids(n) for n in (130, 64, 3, 200)]
    try:
        tiny_q4.pieces_together, tiny_q4.piece_threads = True, threads
        alone = [_prompt_kv(tiny_q4, [p], []) for p in prompts]
        batched = _prompt_kv(tiny_q4, prompts, [])
        warm = _prompt_kv(tiny_q4, prompts, [system + ids(20)])
        tiny_q4.piece_threads = 1  # the other thread count gives the same numbers
        one_thread = _prompt_kv(tiny_q4, prompts, [])
    finally:
        tiny_q4.pieces_together, tiny_q4.piece_threads = False, 1
    for a, b, w, t in zip(alone, batched, warm, one_thread, strict=True):
        for x, y, z, u in zip(a[0], b, w, t, strict=True):
            assert torch.equal(x, y) and torch.equal(x, z) and torch.equal(x, u)


def test_the_load_check_notices_rows_that_change_with_the_batch(tiny_q4: Any) -> None:
    """A matmul whose rows depend on how many rows it gets (as a kernel that splits its
    sums by the batch size would) fails the check, so the engine keeps one piece at a time."""
    import copy

    from chatbot.engine.model import piece_mode

    class RowCountLinear:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __call__(self, x: torch.Tensor, decode_rows: int = 0) -> torch.Tensor:
            y = self.inner(x, decode_rows)
            return y + 1e-3 * (x.shape[0] > 64)  # exact only up to 64 rows

    model = copy.copy(tiny_q4)
    layer = copy.copy(tiny_q4.layers[0])
    layer.down = RowCountLinear(layer.down)
    model.layers = [layer, *tiny_q4.layers[1:]]
    assert piece_mode(model) == (False, 1)


def test_an_adapters_down_product_sums_the_same_on_any_thread_count() -> None:
    """The down projection's adapter (k 1536, r 48): MKL splits its sums between two threads
    on the Intel Xeon box, which made prompt pieces one-thread-only there. ``lora_down``
    gives the one-thread numbers whatever the thread count, for any number of rows."""
    from chatbot.engine.linear import lora_down

    gen = torch.Generator().manual_seed(3)
    a = torch.randn(1536, 48, generator=gen)
    x = torch.randn(320, 1536, generator=gen)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = x @ a
        torch.set_num_threads(max(2, before))
        for rows in (16, 64, 320):
            assert torch.equal(lora_down(x[:rows], a), one_thread[:rows])
        assert torch.get_num_threads() == max(2, before)  # the caller's threads come back
    finally:
        torch.set_num_threads(before)
