"""Choosing tokens from logits: greedy picks, temperature/top-p sampling, and drafts.

The scheduler decides what runs and the model runner runs it; this module turns a step's
logits into tokens. Prompt-lookup drafting lives here too: a draft is a guess at the next
greedy tokens (:func:`prompt_lookup`), and :func:`accepted_length` keeps the part of it
that the model's own greedy picks confirm, so drafting never changes a reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one sequence."""

    max_new_tokens: int = 160
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False


def pick_tokens(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
) -> list[tuple[int, int]]:
    """One token per logit row: ``(row, token)``, the greedy rows first (one argmax over all
    of them), then the sampled rows in order."""
    out: list[tuple[int, int]] = []
    greedy_rows = [i for i, p in enumerate(params) if p.temperature <= 0]
    if greedy_rows:
        picks = logits[greedy_rows].argmax(dim=-1).tolist()
        out.extend(zip(greedy_rows, picks, strict=True))
    for i, p in enumerate(params):
        if p.temperature > 0:
            out.append((i, sample_top_p(logits[i], p, generators[i])))
    return out


def greedy_picks(logits: torch.Tensor) -> list[int]:
    """The greedy token of every row (a drafted sequence's rows, for :func:`accepted_length`)."""
    return list(logits.argmax(dim=-1).tolist())


def sample_top_p(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> int:
    """Sample one token id with temperature and nucleus (top-p) filtering."""
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        cumulative = sorted_probs.cumsum(-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        keep = cumulative - sorted_probs < params.top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


def prompt_lookup(tokens: list[int], room: int) -> list[int]:
    """Up to ``room`` tokens that followed the latest earlier occurrence of the last 3 (else
    2) of ``tokens``; [] when there is none."""
    if room <= 0:
        return []
    end = len(tokens)
    for n in (3, 2):
        if end <= n:
            continue
        tail = tokens[end - n :]
        first = tail[0]
        # newest match first; the match must leave at least one token after it
        for i in range(end - n - 1, -1, -1):
            if tokens[i] == first and tokens[i : i + n] == tail:
                return tokens[i + n : i + n + room]
    return []


def accepted_length(draft: list[int], picks: list[int]) -> int:
    """How many leading draft tokens the model's greedy ``picks`` agree with (``picks[i]``
    is the model's choice after the sequence's last token and ``draft[:i]``)."""
    agreed = 0
    while agreed < len(draft) and draft[agreed] == picks[agreed]:
        agreed += 1
    return agreed


def next_draft_length(draft: list[int], agreed: int) -> int:
    """Every extra row costs: draft one more token after a fully accepted draft, and after
    a rejection only as many as were accepted, plus one."""
    return agreed + 1 if agreed < len(draft) else len(draft) + 1
