"""The model runner: runs one planned step on the model, on the right kernels and threads.

The scheduler decides *what* runs (which sequences, which tokens, into which KV slots: a
:class:`StepPlan`); the runner decides *how*: it completes the plan with its
:class:`Kernels` (which decode rows read the 4-bit weights, whether they go through the
native step, how many OpenMP threads) and runs the model's forward pass. The sampler
(``sampler.py``) turns the logits into tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from chatbot.engine.linear import ONE_THREAD_ROWS
from chatbot.engine.model import Kernels, KVCache, StepPlan, choose_kernels


class ModelRunner:
    """Runs :class:`StepPlan` steps on one model (a :class:`~chatbot.engine.model.Llama`)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        # A step of a few decode rows is too small to split across cores: a second OpenMP
        # thread mostly waits at barriers, and stalls whenever the event loop's thread needs
        # the core. Such steps run on one thread; bigger ones on all of ``threads``.
        self.threads = torch.get_num_threads()
        # (q4's native decode step is the exception: one C call per step, no barriers
        # in between torch ops, and it runs ~1.8x faster on two cores than on one.)
        small = model.format == "q4" and getattr(model, "native_decoder", None) is None
        self.small_step_rows = ONE_THREAD_ROWS if small else 0

    def threads_for(self, plan: StepPlan) -> int:
        """One thread for a small step, else all; drafted rows ride along with their
        sequence's row and do not make a step "big"."""
        drafted = len(plan.decode_positions) - plan.n_sequences
        return 1 if plan.n_tokens - drafted <= self.small_step_rows else self.threads

    def plan_kernels(self, plan: StepPlan, cache: KVCache) -> Kernels:
        """Choose ``plan``'s kernels and thread count (unless it has them) and record them
        in the plan."""
        if plan.kernels is None:
            plan.kernels = choose_kernels(self.model, plan, cache.k, self.threads_for(plan))
        return plan.kernels

    def run(self, tokens: list[int], plan: StepPlan, cache: KVCache) -> torch.Tensor:
        """One forward pass: fp32 logits [len(plan.logit_rows), vocab]."""
        threads = self.plan_kernels(plan, cache).threads
        if threads and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        result: torch.Tensor = self.model.forward(
            torch.tensor(tokens, dtype=torch.long), plan, cache
        )
        return result
