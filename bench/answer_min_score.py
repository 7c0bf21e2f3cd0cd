"""How ``Settings.retrieval_min_score`` trades answerable questions for handoffs.

Below the threshold the pipeline does not generate: it says it has no information and
offers a person. This script measures, for several thresholds, how many answerable
questions would wrongly hand off (bench/data/retrieval_questions.jsonl plus the policy
questions of the eval sets) and how many unanswerable ones it catches (the eval sets'
``unanswerable`` questions). The baseline is "no threshold" (0.0): every question is
answered from whatever retrieval returns.

    python3 bench/answer_min_score.py            # needs the demo and tau stores imported

Writes bench/results/answer_min_score.json.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from chatbot.settings import Settings
from chatbot.storage.db import Database
from knowledge_base.retrieval import Retriever
from knowledge_base.stores import get_store

DATA = Path(__file__).parent / "data"
RESULTS = Path(__file__).parent / "results" / "answer_min_score.json"
THRESHOLDS = (0.0, 0.30, 0.35, 0.38, 0.40, 0.42, 0.45, 0.50)


def _rows(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.from_env()
    db = Database(settings.database_url)
    retriever = Retriever(db, settings.index_dir)
    with db.sessions() as session:
        stores = {name: get_store(session, name).id for name in ("demo", "tau")}
    for store_id in stores.values():
        retriever.sync(store_id)

    def top(store: str, question: str) -> float:
        hits = retriever.search(stores[store], question, k=1)
        return hits[0].score if hits else 0.0

    answerable = [top("demo", str(r["q"])) for r in _rows("retrieval_questions.jsonl")]
    unanswerable: list[float] = []
    for name in ("eval_demo.jsonl", "eval_tau.jsonl"):
        for r in _rows(name):
            if r["category"] == "policy":
                answerable.append(top(str(r["store"]), str(r["message"])))
            elif r["category"] == "unanswerable":
                unanswerable.append(top(str(r["store"]), str(r["message"])))

    table = []
    for t in THRESHOLDS:
        lost = sum(1 for s in answerable if s < t)
        caught = sum(1 for s in unanswerable if s < t)
        table.append(
            {
                "min_score": t,
                "answerable_handed_off": lost,
                "answerable_total": len(answerable),
                "unanswerable_caught": caught,
                "unanswerable_total": len(unanswerable),
            }
        )
        print(
            f"min_score {t:.2f}: answerable handed off {lost}/{len(answerable)}, "
            f"unanswerable caught {caught}/{len(unanswerable)}"
            + ("   (baseline: no threshold)" if t == 0.0 else "")
            + ("   <- current default" if t == settings.retrieval_min_score else "")
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "default": settings.retrieval_min_score,
                "thresholds": table,
                "unanswerable_scores": sorted(round(s, 3) for s in unanswerable),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
