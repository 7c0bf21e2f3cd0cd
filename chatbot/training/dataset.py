"""The supervised set: scenarios rendered with the server's own prompt builder, loss-masked.

Every example is built with :func:`chatbot.answering.prompt.build_prompt_ids`, the same
function the pipeline calls at inference, so the model is trained on exactly the token
layout it will see when serving. The target reply is appended as separately encoded
tokens (as generation produces them) followed by the end-of-turn token; only those
tokens carry a loss, everything before them is masked with ``-100``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbot.answering.facts import Fact
from chatbot.answering.prompt import ChatTokenizer, build_prompt_ids
from chatbot.types import Turn

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
END_OF_TURN = "<|im_end|>"

# What the grounding guard treats as a checkable claim: order numbers, long digit runs
# (tracking), money, and any other number. A target reply may only contain those that
# the facts shown to the model contain.
_CLAIM_RE = re.compile(r"#?[A-Z]{0,3}\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Scenario:
    """One training conversation before tokenisation."""

    category: str
    source: str  # "store" | "bitext" | "template"
    message: str
    reply: str
    facts: tuple[Fact, ...] = ()
    history: tuple[Turn, ...] = ()
    customer_id: int | None = None

    def key(self) -> str:
        """A stable id for de-duplication and split checks."""
        raw = json.dumps(
            [self.category, self.message, [f.line() for f in self.facts],
             [(t.role, t.text) for t in self.history]],
        )
        return hashlib.sha1(raw.encode()).hexdigest()[:16]


@dataclass
class Example:
    """A tokenised, loss-masked training example."""

    input_ids: list[int]
    labels: list[int]
    category: str
    source: str
    message: str = ""

    @property
    def n_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class DatasetStats:
    """Counts for the model card."""

    examples: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    per_category: dict[str, int] = field(default_factory=dict)
    per_source: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "tokens": self.tokens,
            "supervised_tokens": self.supervised_tokens,
            "mean_tokens": round(self.tokens / max(1, self.examples), 1),
            "per_category": dict(sorted(self.per_category.items())),
            "per_source": dict(sorted(self.per_source.items())),
            "dropped": dict(sorted(self.dropped.items())),
        }


def claims(text: str) -> set[str]:
    """Numbers and ids in ``text``, normalised (no thousands separators, no ``#``)."""
    return {m.replace(",", "").lstrip("#").rstrip(".") for m in _CLAIM_RE.findall(text)}


def unsupported(reply: str, facts: Iterable[Fact], message: str = "") -> set[str]:
    """Claims in ``reply`` found neither in the facts nor in the shopper's own message."""
    shown = claims(" ".join(f.line() for f in facts)) | claims(message)
    shown |= {s.split(".")[0] for s in shown}  # "$49.00" also supports "49"
    return {c for c in claims(reply) if c not in shown}


def encode_example(tokenizer: ChatTokenizer, scenario: Scenario, max_len: int) -> Example | None:
    """Tokenise one scenario with the inference prompt builder; ``None`` when it does not
    fit in ``max_len`` tokens or a fact the reply copies was trimmed out of the prompt."""
    prompt_ids, kept = build_prompt_ids(
        tokenizer, list(scenario.facts), scenario.message, scenario.history
    )
    if unsupported(scenario.reply, kept, scenario.message):
        return None
    reply_ids = list(tokenizer.encode(scenario.reply + END_OF_TURN, add_special_tokens=False))
    ids = prompt_ids + reply_ids
    if len(ids) > max_len:
        return None
    labels = [IGNORE_INDEX] * len(prompt_ids) + reply_ids
    return Example(ids, labels, scenario.category, scenario.source, scenario.message)


def encode_all(
    tokenizer: ChatTokenizer, scenarios: Sequence[Scenario], max_len: int
) -> tuple[list[Example], DatasetStats]:
    """Tokenise every scenario, dropping (and counting) the ones that cannot be used."""
    stats = DatasetStats()
    examples: list[Example] = []
    per_cat: Counter[str] = Counter()
    per_src: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for sc in scenarios:
        if unsupported(sc.reply, sc.facts, sc.message):
            dropped["unsupported_claim"] += 1
            continue
        ex = encode_example(tokenizer, sc, max_len)
        if ex is None:
            dropped["too_long_or_trimmed"] += 1
            continue
        examples.append(ex)
        per_cat[sc.category] += 1
        per_src[sc.source] += 1
        stats.tokens += len(ex.input_ids)
        stats.supervised_tokens += ex.n_supervised
    stats.examples = len(examples)
    stats.per_category = dict(per_cat)
    stats.per_source = dict(per_src)
    stats.dropped = dict(dropped)
    return examples, stats


def write_jsonl(path: Path, scenarios: Sequence[Scenario]) -> None:
    """The readable training set (messages + reply), for inspection and the card."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for sc in scenarios:
            fh.write(json.dumps({
                "category": sc.category,
                "source": sc.source,
                "history": [[t.role, t.text] for t in sc.history],
                "facts": [f.line() for f in sc.facts],
                "message": sc.message,
                "reply": sc.reply,
            }, ensure_ascii=False) + "\n")


def save_examples(path: Path, examples: Sequence[Example], stats: DatasetStats) -> None:
    """The tokenised set, so ``--resume`` trains on exactly the same examples."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"stats": stats.as_dict()}) + "\n")
        for ex in examples:
            fh.write(json.dumps([ex.category, ex.source, ex.input_ids, ex.labels]) + "\n")


def load_examples(path: Path) -> tuple[list[Example], dict[str, Any]]:
    """Read what :func:`save_examples` wrote."""
    with path.open(encoding="utf-8") as fh:
        stats = json.loads(fh.readline())["stats"]
        examples = [Example(ids, labels, cat, src) for cat, src, ids, labels in map(json.loads, fh)]
    return examples, stats
