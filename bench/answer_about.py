"""How often code hands off because the article found is not about the question.

Below ``ABOUT_SCORE`` a retrieved article must also be about what was asked (a sentence
of it within ``ABOUT_SIMILARITY`` of the question, or every topic word of the question in
it; ``chatbot.answering.pipeline._about``), else the pipeline hands off in code instead of
leaving it to the model. This script plans every question without a model (the plan is
code's) and counts the code handoffs (reason ``no_match``) with the rule and without it
(``ABOUT_SCORE`` 0), on:

- answerable: bench/data/retrieval_questions.jsonl (demo store) and the eval sets' policy
  questions (both stores);
- unanswerable: the eval sets' unanswerable questions and the near-topic questions the
  adapter is trained to decline (chatbot/training/questions.py, demo store).

    python3 bench/answer_about.py      # uses the eval database (DATA_DIR/eval), as `chatbot eval`

Writes bench/results/answer_about.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from chatbot.answering import pipeline as answering
from chatbot.answering.dialogue import DialogueState
from chatbot.answering.router import Intent, route
from chatbot.commands.eval import DEFAULT_TAU_DIR, _prepare_store, make_pipeline_no_engine
from chatbot.settings import Settings
from chatbot.storage.db import Database
from chatbot.training.questions import UNANSWERABLE
from chatbot.types import AnswerRequest
from knowledge_base.retrieval import Retriever

DATA = Path(__file__).parent / "data"
RESULTS = Path(__file__).parent / "results" / "answer_about.json"


def _rows(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.from_env()
    scratch = settings.data_dir / "eval"
    settings = dataclasses.replace(
        settings, data_dir=scratch, database_url=f"sqlite:///{scratch / 'eval.db'}"
    )
    scratch.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    stores = {name: _prepare_store(settings, db, name, DEFAULT_TAU_DIR) for name in ("demo", "tau")}
    retriever = Retriever(db, settings.index_dir)
    pipeline = make_pipeline_no_engine(settings, db, retriever)
    for store_id in stores.values():
        pipeline.prepare(store_id)

    answerable = [("demo", str(r["q"])) for r in _rows("retrieval_questions.jsonl")]
    unanswerable = [("demo", q) for q in UNANSWERABLE]
    for name in ("eval_demo.jsonl", "eval_tau.jsonl"):
        for r in _rows(name):
            if r["category"] == "policy":
                answerable.append((str(r["store"]), str(r["message"])))
            elif r["category"] == "unanswerable":
                unanswerable.append((str(r["store"]), str(r["message"])))

    def handed_off(store: str, question: str) -> bool:
        decision = route(question)
        if decision.intent not in (Intent.POLICY, Intent.PRODUCT):
            return False  # (handoffs, small talk, orders: not retrieval's)
        request = AnswerRequest(stores[store], question)
        return pipeline.plan(request, decision, DialogueState()).reason == "no_match"

    table = {}
    lost: list[str] = []
    for label, score in (("without the rule", 0.0), ("with the rule", answering.ABOUT_SCORE)):
        answering.ABOUT_SCORE = score
        wrong = [q for s, q in answerable if handed_off(s, q)]
        caught = [q for s, q in unanswerable if handed_off(s, q)]
        table[label] = {
            "answerable_handed_off": len(wrong),
            "answerable_total": len(answerable),
            "unanswerable_handed_off": len(caught),
            "unanswerable_total": len(unanswerable),
        }
        print(f"{label}: answerable handed off {len(wrong)}/{len(answerable)}, "
              f"unanswerable handed off {len(caught)}/{len(unanswerable)}")
        lost = wrong
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "about_score": answering.ABOUT_SCORE,
        "about_similarity": answering.ABOUT_SIMILARITY,
        "table": table,
        "answerable_handed_off_with_the_rule": lost,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
