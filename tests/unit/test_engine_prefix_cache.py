"""The prefix cache: longest-common-prefix lookup and LRU eviction under a memory cap."""

from __future__ import annotations

import torch

from chatbot.engine.prefix_cache import PrefixCache, common_prefix


def _kv(n: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((2, 1, n, 4), fill), torch.full((2, 1, n, 4), -fill)


def test_common_prefix() -> None:
    t = torch.tensor
    assert common_prefix(t([1, 2, 3]), t([1, 2, 4, 5])) == 2
    assert common_prefix(t([1, 2]), t([1, 2, 3])) == 2
    assert common_prefix(t([9]), t([1])) == 0
    assert common_prefix(t([], dtype=torch.long), t([1])) == 0


def test_lookup_picks_the_longest_shared_prefix() -> None:
    cache = PrefixCache(10**9, min_hit=2)
    cache.store(tuple(range(10)), *_kv(10, 1.0), key=None)
    cache.store((*range(6), 99, 98), *_kv(8, 2.0), key=None)
    hit = cache.lookup([*range(8), 50])
    assert hit is not None and hit.length == 8 and hit.k[0, 0, 0, 0] == 1.0
    assert cache.lookup([7, 7, 7]) is None  # nothing shared
    assert cache.lookup([0, 5]) is None  # shorter than min_hit


def test_conversation_entry_is_replaced_and_preferred_on_ties() -> None:
    cache = PrefixCache(10**9, min_hit=1)
    cache.store((1, 2, 3), *_kv(3, 1.0), key=None)
    cache.store((1, 2, 3), *_kv(3, 5.0), key="conv-a")
    cache.store((1, 2, 3, 4), *_kv(4, 6.0), key="conv-a")  # the next turn replaces it
    assert len(cache.entries) == 2
    hit = cache.lookup([1, 2, 3, 4, 5], cache_key="conv-a")
    assert hit is not None and hit.length == 4 and hit.k[0, 0, 0, 0] == 6.0


def test_lru_eviction_keeps_memory_under_the_cap() -> None:
    one = PrefixCache(10**9)
    one.store(tuple(range(10)), *_kv(10, 1.0), key=None)
    size = one.nbytes
    cache = PrefixCache(int(size * 2.5), min_hit=1)
    for i in range(3):
        cache.store(tuple(range(i * 100, i * 100 + 10)), *_kv(10, float(i)), key=None)
        if i == 1:
            assert cache.lookup(list(range(10))) is not None  # touch the first entry
    assert cache.nbytes <= cache.max_bytes and len(cache.entries) == 2
    assert cache.lookup(list(range(10))) is not None  # recently used: kept
    assert cache.lookup(list(range(100, 110))) is None  # least recently used: evicted
    assert cache.lookup(list(range(200, 210))) is not None


def test_an_entry_larger_than_the_cap_is_not_stored() -> None:
    cache = PrefixCache(100)
    cache.store(tuple(range(50)), *_kv(50, 1.0), key=None)
    assert not cache.entries and cache.nbytes == 0
