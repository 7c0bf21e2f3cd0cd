"""Rate limiters, connection caps and the Prometheus text output (no sockets)."""

from __future__ import annotations

from chatbot.server.limits import ConnectionLimiter, KeyedRateLimiter, TokenBucket, per_minute
from chatbot.server.metrics import Counter, Histogram, Registry, ServerMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_bursts_then_refills() -> None:
    clock = Clock()
    bucket = per_minute(6, clock)  # burst 6, one every 10 s
    assert all(bucket.allow() for _ in range(6))
    assert not bucket.allow()
    assert 9.9 < bucket.retry_after() <= 10.0
    clock.now = 10.0
    assert bucket.allow() and not bucket.allow()
    clock.now = 1000.0
    assert sum(bucket.allow() for _ in range(20)) == 6  # never more than the burst


def test_zero_rate_bucket_never_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(capacity=1, rate=0, clock=clock)
    assert bucket.allow() and not bucket.allow()
    clock.now = 1e9
    assert not bucket.allow()


def test_keyed_limiter_isolates_keys_and_bounds_memory() -> None:
    clock = Clock()
    limiter = KeyedRateLimiter(2, max_keys=100, clock=clock)
    assert limiter.allow("a") and limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")
    for i in range(1000):
        limiter.allow(f"ip{i}")
    assert len(limiter._buckets) == 100


def test_connection_limiter_caps_total_and_per_ip() -> None:
    caps = ConnectionLimiter(max_total=3, max_per_ip=2)
    assert caps.acquire("1.1.1.1") is None and caps.acquire("1.1.1.1") is None
    assert caps.acquire("1.1.1.1") == "too_many_connections_from_ip"
    assert caps.acquire("2.2.2.2") is None
    assert caps.acquire("3.3.3.3") == "server_full"
    caps.release("1.1.1.1")
    assert caps.count("1.1.1.1") == 1 and caps.acquire("3.3.3.3") is None
    for ip in ("1.1.1.1", "2.2.2.2", "3.3.3.3", "3.3.3.3"):
        caps.release(ip)
    assert caps.total == 0 and caps.count("3.3.3.3") == 0


def test_prometheus_text_format() -> None:
    reg = Registry()
    errors = reg.add(Counter("x_errors_total", "Errors.", ["code"]))
    hist = reg.add(Histogram("x_seconds", "Latency.", [0.1, 1]))
    errors.inc(2, 'bad"json')
    hist.observe(0.05)
    hist.observe(0.5)
    hist.observe(7)
    lines = reg.render().splitlines()
    assert "# TYPE x_errors_total counter" in lines
    assert 'x_errors_total{code="bad\\"json"} 2' in lines
    assert 'x_seconds_bucket{le="0.1"} 1' in lines
    assert 'x_seconds_bucket{le="1"} 2' in lines
    assert 'x_seconds_bucket{le="+Inf"} 3' in lines
    assert "x_seconds_count 3" in lines and "x_seconds_sum 7.55" in lines


def test_server_metrics_render_every_family() -> None:
    text = ServerMetrics().render()
    for name in (
        "chatbot_connections",
        "chatbot_replies_total",
        "chatbot_errors_total",
        "chatbot_time_to_first_token_seconds",
        "chatbot_reply_tokens_per_second",
        "chatbot_reply_tokens_total",
        "chatbot_messages_total",
    ):
        assert f"# TYPE {name} " in text
