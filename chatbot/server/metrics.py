"""Prometheus metrics in the text exposition format (version 0.0.4), with no dependency.

Counters, gauges and histograms with fixed label names; :meth:`Registry.render` writes
``# HELP`` / ``# TYPE`` lines and samples. Everything runs on the event loop thread, so
no locks are needed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def samples(self) -> list[str]:
        if not self.values and not self.label_names:
            return [f"{self.name} 0"]
        return [
            f"{self.name}{_labels(self.label_names, k)} {_num(v)}"
            for k, v in sorted(self.values.items())
        ]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def dec(self, amount: float = 1.0, *labels: str) -> None:
        self.inc(-amount, *labels)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def samples(self) -> list[str]:
        out, running = [], 0
        for bound, n in zip([*self.bounds, math.inf], self.counts, strict=True):
            running += n
            out.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {running}')
        out.append(f"{self.name}_sum {_num(self.sum)}")
        out.append(f"{self.name}_count {self.count}")
        return out


M = TypeVar("M", bound=_Metric)


class Registry:
    """A set of metrics rendered together at ``/metrics``."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric: M) -> M:
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics:
            lines += metric.header() + metric.samples()
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """The chat server's metrics, by name."""

    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.connections = r.add(Gauge("chatbot_connections", "Open sockets.", ["socket"]))
        self.connections_total = r.add(
            Counter("chatbot_connections_total", "Sockets opened.", ["socket"])
        )
        self.rejected = r.add(
            Counter("chatbot_connections_rejected_total", "Upgrades refused.", ["reason"])
        )
        self.messages = r.add(Counter("chatbot_messages_total", "Shopper messages stored."))
        self.replies = r.add(Counter("chatbot_replies_total", "Bot replies.", ["outcome"]))
        self.tokens = r.add(Counter("chatbot_reply_tokens_total", "Reply tokens streamed."))
        self.errors = r.add(Counter("chatbot_errors_total", "Error events sent.", ["code"]))
        self.claims_removed = r.add(
            Counter(
                "chatbot_claims_removed_total",
                "Reply sentences the claim guard replaced or dropped, by failed check.",
                ["check"],
            )
        )
        self.ttft = r.add(
            Histogram(
                "chatbot_time_to_first_token_seconds",
                "From stored message to first reply token sent.",
                [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
            )
        )
        self.tokens_per_second = r.add(
            Histogram(
                "chatbot_reply_tokens_per_second",
                "Streaming speed of each reply after its first token.",
                [1, 5, 10, 20, 40, 80, 160, 320],
            )
        )
        self.reply_seconds = r.add(
            Histogram(
                "chatbot_reply_duration_seconds",
                "From stored message to done.",
                [0.1, 0.5, 1, 2, 5, 10, 30, 60],
            )
        )

    def render(self) -> str:
        return self.registry.render()
