"""Which kernels a step gets with batch invariance on (the default) and off."""

from __future__ import annotations

from dataclasses import dataclass

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


def test_settings_read_the_switch() -> None:
    from chatbot.settings import Settings

    assert Settings.from_env({}).engine_batch_invariant
    assert not Settings.from_env({"CHATBOT_ENGINE_BATCH_INVARIANT": "0"}).engine_batch_invariant
