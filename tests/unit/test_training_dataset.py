"""The supervised-set builder: determinism, loss mask, no eval leakage, categories."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatbot.answering.facts import Fact
from chatbot.answering.pipeline import Pipeline
from chatbot.answering.prompt import build_prompt_ids
from chatbot.answering.router import route
from chatbot.evaluation import questions as eval_questions
from chatbot.settings import Settings
from chatbot.training import questions as train_questions
from chatbot.training.build import _PlanOnlyEngine
from chatbot.training.dataset import (
    END_OF_TURN,
    IGNORE_INDEX,
    Scenario,
    encode_all,
    encode_example,
    unsupported,
)
from chatbot.training.scenarios import Quotas, ScenarioBuilder
from chatbot.training.split import is_heldout_customer
from chatbot.types import AnswerRequest, Turn


class ChunkTokenizer:
    """A complete, tiny chat tokenizer: one id per 8-character chunk, ChatML template.

    It implements the two methods the prompt builder uses, so unit tests can check the
    loss mask without loading the real model's tokenizer (that check is below, marked
    ``model``). Chunks keep prompts well under the builder's token budget."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.pieces: list[str] = []

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> str:
        text = "".join(
            f"<|im_start|>{m['role']}\n{m['content']}{END_OF_TURN}\n" for m in conversation
        )
        if kwargs.get("add_generation_prompt"):
            text += "<|im_start|>assistant\n"
        return text

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = []
        for i in range(0, len(text), 8):
            piece = text[i : i + 8]
            if piece not in self.vocab:
                self.vocab[piece] = len(self.pieces)
                self.pieces.append(piece)
            ids.append(self.vocab[piece])
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


ORDER_FACT = Fact("order", "#W2611340", "status: processed; tracking 357962501027 (UPS)")


def _scenario(reply: str) -> Scenario:
    return Scenario("order_tracking", "store", "where is #W2611340?", reply, (ORDER_FACT,))


def test_loss_mask_covers_exactly_the_reply_and_end_of_turn() -> None:
    tok = ChunkTokenizer()
    reply = "Order #W2611340 is processed. Tracking number: 357962501027 (UPS)."
    ex = encode_example(tok, _scenario(reply), max_len=2000)
    assert ex is not None
    prompt_ids, _ = build_prompt_ids(tok, [ORDER_FACT], "where is #W2611340?")
    # The prompt part is byte-identical to what the server sends and fully masked.
    assert ex.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(x == IGNORE_INDEX for x in ex.labels[: len(prompt_ids)])
    supervised = [x for x in ex.labels if x != IGNORE_INDEX]
    assert tok.decode(supervised) == reply + END_OF_TURN
    assert ex.labels[len(prompt_ids) :] == ex.input_ids[len(prompt_ids) :]


def test_reply_with_a_number_not_in_the_facts_is_dropped() -> None:
    tok = ChunkTokenizer()
    bad = _scenario("Order #W2611340 is processed, tracking 111122223333.")
    good = _scenario("Order #W2611340 is processed.")
    assert unsupported(bad.reply, bad.facts) == {"111122223333"}
    examples, stats = encode_all(tok, [bad, good], max_len=2000)
    assert len(examples) == 1 and stats.dropped == {"unsupported_claim": 1}


def test_too_long_examples_are_dropped_not_truncated() -> None:
    examples, stats = encode_all(ChunkTokenizer(), [_scenario("Order #W2611340.")], max_len=20)
    assert examples == [] and stats.dropped == {"too_long_or_trimmed": 1}


@pytest.mark.model
def test_real_tokenizer_prompt_matches_inference_and_mask_decodes_to_reply() -> None:
    settings = Settings.from_env()
    if not (settings.model_path / "config.json").is_file():
        pytest.skip("base model not pulled")
    from chatbot.training.build import load_tokenizer

    tok = load_tokenizer(settings.model_path)
    reply = "Order #W2611340 is processed. Tracking number: 357962501027 (UPS)."
    ex = encode_example(tok, _scenario(reply), max_len=384)
    assert ex is not None
    prompt_ids, _ = build_prompt_ids(tok, [ORDER_FACT], "where is #W2611340?")
    assert ex.input_ids[: len(prompt_ids)] == prompt_ids
    supervised = [x for x in ex.labels if x != IGNORE_INDEX]
    assert tok.decode(supervised) == reply + END_OF_TURN


# -- the builder over a real store (the shipped demo store in a scratch SQLite file) --------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, int, Any]]:
    from chatbot.storage.db import Database
    from knowledge_base.demo import ensure_demo_store

    home = tmp_path_factory.mktemp("demo")
    settings = Settings.from_env(env={}, data_dir=home)
    db = Database(settings.database_url)
    store = ensure_demo_store(db)
    # No retriever: article/product questions get the pipeline's fixed "no match" reply and
    # are skipped; every order question is planned by the real router and SQL lookups.
    pipeline = Pipeline(db, None, _PlanOnlyEngine(ChunkTokenizer()), settings)

    def plan(request: AnswerRequest) -> Any:
        return pipeline.plan(request, route(request.message, request.history))

    yield db, store.id, plan
    db.dispose()


SMALL = Quotas(order=30, follow_up=10, my_order=6, false_premise=4, article=5,
               bitext_policy=0, bitext_order=0, product=5, unanswerable=5, attack=2)


def _build(demo: tuple[Any, int, Any], seed: int) -> tuple[list[Scenario], ScenarioBuilder]:
    db, store_id, plan = demo
    builder = ScenarioBuilder(db, store_id, plan, seed=seed)
    return builder.build(SMALL), builder


def test_build_is_deterministic_under_a_seed(demo: tuple[Any, int, Any]) -> None:
    first, _ = _build(demo, 5)
    again, _ = _build(demo, 5)
    other, _ = _build(demo, 6)
    assert [(s.message, s.reply, s.facts) for s in first] == [
        (s.message, s.reply, s.facts) for s in again
    ]
    assert [s.message for s in first] != [s.message for s in other]


def test_order_categories_and_follow_ups_are_present(demo: tuple[Any, int, Any]) -> None:
    scenarios, builder = _build(demo, 5)
    cats = {s.category for s in scenarios}
    assert {"order_status", "order_tracking", "order_items", "order_total", "follow_up",
            "false_premise"} <= cats
    follow = [s for s in scenarios if s.category == "follow_up"]
    assert all(len(s.history) == 2 and s.history[0].role == "shopper" for s in follow)
    # Every order reply names the order its facts are about, copied exactly.
    for s in scenarios:
        if s.category.startswith("order_") and s.category != "order_returns":
            assert s.facts[0].id in s.reply
        assert not unsupported(s.reply, s.facts, s.message)
    # Questions the pipeline answers with fixed text never became training examples.
    assert any(k.startswith("fixed:") for k in builder.skipped)


def test_training_never_sees_held_out_customers_or_eval_questions(
    demo: tuple[Any, int, Any],
) -> None:
    db, store_id, _ = demo
    scenarios, _ = _build(demo, 5)
    evalset = eval_questions.generate(db, store_id, "demo", heldout_only=True)
    assert evalset, "the demo eval set is empty"
    assert all(q.customer is None or is_heldout_customer(q.customer) for q in evalset)
    train_text = "\n".join(
        " ".join([s.message, s.reply, *(f.line() for f in s.facts),
                  *(t.text for t in s.history)]) for s in scenarios
    )
    train_messages = {s.message.lower() for s in scenarios}
    for q in evalset:
        assert q.message.lower() not in train_messages
        if q.category in eval_questions.ORDER_CATEGORIES:
            number = re.search(r"#\w+", q.message)
            assert number is not None and number.group(0) not in train_text
    # The phrasings themselves are disjoint, not just the orders they are filled with.
    train_templates = {t for ts in train_questions.ORDER_QUESTIONS.values() for t in ts}
    eval_templates = {t for ts in eval_questions.EVAL_ORDER_QUESTIONS.values() for t in ts}
    assert not train_templates & eval_templates
    eval_unanswerable = {m.lower() for ms in eval_questions.UNANSWERABLE.values() for m in ms}
    assert not eval_unanswerable & {m.lower() for m in train_questions.UNANSWERABLE}


def test_history_turns_are_rendered_before_the_facts() -> None:
    tok = ChunkTokenizer()
    history = (Turn("shopper", "where is #W2611340?"), Turn("bot", "It is processed."))
    sc = Scenario("follow_up", "store", "and the tracking number?",
                  "The tracking number is 357962501027 (UPS).", (ORDER_FACT,), history)
    ex = encode_example(tok, sc, max_len=4000)
    assert ex is not None
    text = tok.decode(ex.input_ids)
    assert text.index("It is processed.") < text.index("Facts:") < text.index("357962501027")


def test_paths_exist() -> None:
    # The question file the eval reads ships with the repository.
    root = Path(__file__).resolve().parents[2]
    assert (root / "bench" / "data").is_dir()
