"""The adapter's model card (README.md): data, training run and evaluation, as measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CARD = "README.md"
TRAINING_JSON = "training.json"


def write_training_record(out_dir: Path, record: dict[str, Any]) -> None:
    """Keep the raw figures beside the adapter so the card can be re-rendered later."""
    (out_dir / TRAINING_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_training_record(out_dir: Path) -> dict[str, Any]:
    path = out_dir / TRAINING_JSON
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _table(rows: list[tuple[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    return "\n".join(["| | |", "| --- | --- |"] + [f"| {k} | {cell(v)} |" for k, v in rows])


def render_card(record: dict[str, Any], evaluation: dict[str, Any] | None = None) -> str:
    """Markdown model card from a training record and, optionally, eval summaries."""
    data = record.get("data", {})
    run = record.get("run", {})
    cfg = record.get("config", {})
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {record.get('base_model', 'HuggingFaceTB/SmolLM2-135M-Instruct')}",
        "license: apache-2.0",
        "tags: [lora, customer-service, grounded-generation]",
        "---",
        "",
        f"# Grounded-answers LoRA adapter ({record.get('store', 'demo')} store)",
        "",
        "A LoRA adapter for SmolLM2-135M-Instruct that teaches it the one job the answering",
        "pipeline gives the model: answer in one to three sentences from the fact lines in",
        "the prompt, copying order numbers, statuses, tracking numbers, prices and dates",
        "exactly, and say it does not know (offering a person) when the facts do not answer.",
        "Routing, order scoping, verification and handoffs are decided by code, not by this",
        "model. The engine merges the adapter into the base weights at load time.",
        "",
        "## Data",
        "",
        f"Built by `chatbot train --store {record.get('store', 'demo')}` from the store's own",
        "articles, products and orders, planned by the real pipeline (router, order lookups",
        "scoped to the asking customer, hybrid retrieval) and rendered with the server's own",
        "prompt builder. Target replies come from templates over the facts shown; a reply",
        "with any number the prompt lacks is rejected. Customers held out for evaluation",
        "(one in five) and the tau-bench store never appear in training. Bitext",
        "(CDLA-Sharing-1.0) contributes question phrasings only, never its answers.",
        "",
        _table([
            ("examples", data.get("examples")),
            ("tokens (prompt + reply)", data.get("tokens")),
            ("supervised tokens (replies)", data.get("supervised_tokens")),
            ("mean tokens per example", data.get("mean_tokens")),
        ]),
        "",
        "Examples per category:",
        "",
        _table(sorted((k, v) for k, v in data.get("per_category", {}).items())),
        "",
        "Examples per source (store = the store's data with our templates; bitext = Bitext",
        "question phrasing; template = hand-written adversarial/no-answer questions):",
        "",
        _table(sorted((k, v) for k, v in data.get("per_source", {}).items())),
        "",
        "## Training",
        "",
        _table([
            ("LoRA", f"r={cfg.get('rank')}, alpha={cfg.get('alpha')}, dropout={cfg.get('dropout')},"
                     f" target {cfg.get('target_modules')}"),
            ("optimiser", f"AdamW lr {cfg.get('learning_rate')}, warm-up {cfg.get('warmup_steps')}"
                          " steps, cosine to 10%"),
            ("batch", f"{cfg.get('micro_batch')} x {cfg.get('grad_accum')} accumulation,"
                      f" max {cfg.get('max_seq_len')} tokens"),
            ("loss", "assistant-reply tokens only (prompt masked)"),
            ("steps", run.get("steps")),
            ("epochs", cfg.get("epochs")),
            ("first-step loss", run.get("first_loss")),
            ("final loss (mean of last 10 steps)", run.get("final_loss")),
            ("mean loss", run.get("mean_loss")),
            ("wall time", f"{run.get('seconds', 0) / 60:.1f} min" if run else None),
            ("throughput", f"{run.get('tokens_per_second', 0):.0f} tokens/s" if run else None),
            ("hardware", record.get("hardware")),
            ("weights", "bfloat16 safetensors (merged in fp32 by the engine)"),
        ]),
        "",
    ]
    if evaluation:
        lines += ["## Evaluation", "",
                  "`chatbot eval` (greedy decoding, full pipeline with guard):", ""]
        for _store, summary in sorted(evaluation.items()):
            # Each summary is the report's markdown, which opens with its own heading.
            lines.append(summary.strip())
            lines.append("")
    else:
        lines += ["## Evaluation", "", "Run `chatbot eval`; see docs/evaluation.md.", ""]
    lines += [
        "## Limits",
        "",
        "A 135M model: it restates short facts well and reasons poorly. Keep it behind the",
        "pipeline (router + grounding guard); do not use it as a general chatbot.",
        "",
    ]
    return "\n".join(str(x) for x in lines)


def write_card(out_dir: Path, evaluation: dict[str, Any] | None = None) -> Path:
    """(Re)write ``README.md`` in ``out_dir`` from its ``training.json``."""
    path = out_dir / CARD
    path.write_text(render_card(read_training_record(out_dir), evaluation))
    return path
