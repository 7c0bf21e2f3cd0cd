"""Saved keys/values of earlier prompts, reused by token-level longest common prefix.

Two kinds of entries share one LRU under one memory cap:

- a conversation's whole sequence (prompt + reply), stored under its ``cache_key`` when
  the turn ends, so the next turn (which extends it) only computes the new tokens;
- a finished prompt, stored under its token ids, so the next request with the same
  system prompt copies that shared prefix instead of recomputing it.

Any entry can serve any request: the lookup takes the entry with the longest common
prefix of token ids. Copying 300 tokens of cache is ~100x cheaper than computing them.

An entry also keeps the next-token logits after its prompt. A request whose prompt is
exactly an entry's (the same question to the same store, the same facts) then starts
from those logits with no forward pass at all: its first token is the one the donor's
pass gave, and so is everything after it, since its keys/values are the donor's.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class CacheEntry:
    tokens: torch.Tensor  # [T] int64
    k: torch.Tensor  # [layers, kv_heads, T, head_dim]
    v: torch.Tensor
    # how many leading positions were computed as prompt (the rest: a reply's decode rows,
    # whose keys/values come from another kernel than a prompt's)
    prompt_len: int = -1
    # the next-token logits [vocab] after the whole prompt (the first ``prompt_len`` tokens),
    # where the donor kept them: a request with exactly that prompt needs no forward pass
    logits: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        extra = self.logits.nbytes if self.logits is not None else 0
        return self.k.nbytes + self.v.nbytes + self.tokens.nbytes + extra


@dataclass
class CacheHit:
    """The first ``length`` positions of ``k``/``v`` match the request's tokens; the first
    ``prompt_len`` of the entry's positions were computed as a prompt."""

    length: int
    k: torch.Tensor
    v: torch.Tensor
    prompt_len: int
    logits: torch.Tensor | None = None

    def whole_prompt(self, tokens: list[int]) -> bool:
        """Whether this hit is exactly the prompt ``tokens``, with the logits after it: the
        request starts at its first token."""
        n = len(tokens)
        return self.logits is not None and self.length == n == self.prompt_len


class PrefixCache:
    """An LRU of :class:`CacheEntry` bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int, *, min_hit: int = 8) -> None:
        self.max_bytes = max_bytes
        self.min_hit = min_hit
        self.entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def lookup(self, tokens: list[int], cache_key: str | None = None) -> CacheHit | None:
        """The entry sharing the longest prefix with ``tokens`` (at least ``min_hit``)."""
        if not self.entries or not tokens:
            self.misses += 1
            return None
        query = torch.tensor(tokens, dtype=torch.long)
        best_key, best_len = None, 0
        for key, entry in self.entries.items():
            n = common_prefix(entry.tokens, query)
            # on a tie prefer the request's own conversation
            if n > best_len or (n == best_len and n and key == _conv_key(cache_key)):
                best_key, best_len = key, n
        if best_key is None or best_len < self.min_hit:
            self.misses += 1
            return None
        self.entries.move_to_end(best_key)
        self.hits += 1
        entry = self.entries[best_key]
        prompt_len = entry.prompt_len if entry.prompt_len >= 0 else len(entry.tokens)
        return CacheHit(best_len, entry.k, entry.v, prompt_len, entry.logits)

    def store(
        self,
        tokens: tuple[int, ...],
        k: torch.Tensor,
        v: torch.Tensor,
        key: str | None,
        prompt_len: int = -1,
        logits: torch.Tensor | None = None,
    ) -> None:
        """Remember ``k``/``v`` for ``tokens`` (a conversation's under ``key``); the first
        ``prompt_len`` positions were computed as a prompt (-1: all of them), and ``logits``
        are the next-token logits after those."""
        name = _conv_key(key) if key is not None else _token_key(tokens)
        entry = CacheEntry(torch.tensor(tokens, dtype=torch.long), k, v, prompt_len, logits)
        if entry.nbytes > self.max_bytes:
            return
        old = self.entries.pop(name, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self.entries[name] = entry
        self.nbytes += entry.nbytes
        while self.nbytes > self.max_bytes:
            _, evicted = self.entries.popitem(last=False)
            self.nbytes -= evicted.nbytes

    def clear(self) -> None:
        self.entries.clear()
        self.nbytes = 0


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """Length of the longest common prefix of two 1-D id tensors."""
    n = min(a.numel(), b.numel())
    if n == 0:
        return 0
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0, 0]) if diff.numel() else n


def _conv_key(cache_key: str | None) -> str:
    return f"conv:{cache_key}"


def _token_key(tokens: tuple[int, ...]) -> str:
    digest = hashlib.blake2b(repr(tokens).encode(), digest_size=16).hexdigest()
    return f"prompt:{digest}"
