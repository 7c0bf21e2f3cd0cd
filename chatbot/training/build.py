"""Wire a store, the real pipeline planner and the tokenizer into a training set."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.answering.pipeline import Pipeline, Plan
from chatbot.answering.router import route
from chatbot.errors import ConfigError
from chatbot.training.bitext import Utterance, load_utterances
from chatbot.training.dataset import DatasetStats, Example, Scenario, encode_all
from chatbot.training.scenarios import Quotas, ScenarioBuilder
from chatbot.types import AnswerRequest

log = logging.getLogger(__name__)


class _PlanOnlyEngine:
    """Stands in for the engine: building a training set only plans, never generates."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def stream(self, request: Any) -> AsyncIterator[str]:
        raise ConfigError("the training planner cannot generate text")


@dataclass
class TrainingSet:
    scenarios: list[Scenario]
    examples: list[Example]
    stats: DatasetStats
    skipped: dict[str, int]


def load_tokenizer(model_path: Path) -> Any:
    """The base model's tokenizer (the one the engine uses)."""
    from transformers import AutoTokenizer

    from chatbot.engine.loader import require_model

    return AutoTokenizer.from_pretrained(str(require_model(model_path)))


def make_planner(settings: Any, db: Any, tokenizer: Any, store_id: int) -> Any:
    """``plan(request)`` of the real pipeline with the real retriever (index synced once)."""
    from knowledge_base.retrieval import Retriever

    retriever = Retriever(db, settings.index_dir)
    pipeline = Pipeline(db, retriever, _PlanOnlyEngine(tokenizer), settings)
    pipeline.prepare(store_id, progress=False)

    def plan(request: AnswerRequest) -> Plan:
        return pipeline.plan(request, route(request.message, request.history))

    return plan


def build_training_set(
    settings: Any,
    db: Any,
    store_id: int,
    *,
    tokenizer: Any,
    seed: int = 13,
    bitext_dir: Path | None = None,
    quotas: Quotas | None = None,
    max_len: int = 384,
    planner: Any = None,
) -> TrainingSet:
    """Scenarios planned by the real pipeline, tokenised with the inference prompt."""
    bitext: dict[str, list[Utterance]] = load_utterances(bitext_dir) if bitext_dir else {}
    plan = planner or make_planner(settings, db, tokenizer, store_id)
    builder = ScenarioBuilder(db, store_id, plan, seed=seed, bitext=bitext)
    scenarios = builder.build(quotas)
    examples, stats = encode_all(tokenizer, scenarios, max_len)
    if not examples:
        raise ConfigError("no usable training examples could be built from this store")
    return TrainingSet(scenarios, examples, stats, dict(builder.skipped))
