"""Abuse limits: token-bucket rate limiters and connection caps (no I/O, injectable clock)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]

# Every frame (valid or not) also spends from a per-connection frame bucket, so a flood of
# garbage or typing frames is throttled like messages are, just with a higher ceiling.
FRAMES_BURST = 200
FRAMES_PER_SECOND = 20.0


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``rate`` per second."""

    capacity: float
    rate: float
    clock: Clock = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.capacity
        self.stamp = self.clock()

    def allow(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are enough; never blocks."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens will be there."""
        return max(0.0, (cost - self.tokens) / self.rate) if self.rate > 0 else float("inf")


def per_minute(count: int, clock: Clock = time.monotonic) -> TokenBucket:
    """A bucket allowing ``count`` per minute, with a burst of ``count``."""
    return TokenBucket(capacity=max(1, count), rate=max(1, count) / 60.0, clock=clock)


class KeyedRateLimiter:
    """One bucket per key (e.g. client IP), with the least recently used keys forgotten.

    Forgetting is safe: a forgotten key comes back with a full bucket, which is at most
    one burst more than it would have had. ``max_keys`` bounds memory under IP spraying.
    """

    def __init__(self, per_min: int, *, max_keys: int = 100_000, clock: Clock = time.monotonic,
                 period_s: float = 60.0):
        self.per_min = per_min
        self.period_s = period_s  # ``per_min`` per ``period_s`` (e.g. 3600: per hour)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            count = max(1, self.per_min)
            bucket = TokenBucket(capacity=count, rate=count / self.period_s, clock=self.clock)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.allow()


class ConnectionLimiter:
    """Caps on open sockets: in total and per client IP."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip: dict[str, int] = {}

    def check(self, ip: str) -> str | None:
        """Why a new connection from ``ip`` would be refused, or None if it fits."""
        if self.total >= self.max_total:
            return "server_full"
        if self._per_ip.get(ip, 0) >= self.max_per_ip:
            return "too_many_connections_from_ip"
        return None

    def acquire(self, ip: str) -> str | None:
        """Count a connection in; returns the refusal reason instead when over a cap."""
        reason = self.check(ip)
        if reason is None:
            self.total += 1
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return reason

    def release(self, ip: str) -> None:
        self.total = max(0, self.total - 1)
        left = self._per_ip.get(ip, 0) - 1
        if left > 0:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)

    def count(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)
