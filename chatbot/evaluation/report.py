"""Aggregate scored replies into the eval report (JSON + a markdown table) and check targets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chatbot.evaluation.questions import ORDER_CATEGORIES
from chatbot.evaluation.runner import Scored

GROUPS: dict[str, tuple[str, ...]] = {
    "order": ORDER_CATEGORIES,
    "order_status": ("order_status",),
    "order_tracking": ("order_tracking",),
    "order_items": ("order_items",),
    "policy": ("policy",),
    "unanswerable": ("unanswerable",),
    "cross_customer": ("cross_customer",),
}


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def summarise(rows: Sequence[Scored]) -> dict[str, Any]:
    """Headline metrics of one system's replies."""
    def fact_acc(cats: tuple[str, ...]) -> float | None:
        sel = [r for r in rows if r.category in cats and r.facts_expected]
        return _rate(sum(r.correct for r in sel), len(sel))

    unanswerable = [r for r in rows if r.category == "unanswerable"]
    with_claims = [r for r in rows if r.unsupported]
    return {
        "questions": len(rows),
        "fact_accuracy": {g: fact_acc(c) for g, c in GROUPS.items()
                          if g not in ("unanswerable", "cross_customer")},
        "unsupported_claim_rate": _rate(len(with_claims), len(rows)),
        "correct_handoff_rate": _rate(sum(r.handoff for r in unanswerable), len(unanswerable)),
        "leak_rate": _rate(sum(1 for r in rows if r.leaked), len(rows)),
        "mean_reply_words": round(sum(r.words for r in rows) / max(1, len(rows)), 1),
        "guard_fired": sum(r.guard_fired for r in rows),
        "replies_guarded": sum(1 for r in rows if r.guard_fired),
    }


TARGETS = (
    ("fact accuracy, order questions >= 0.90", lambda s: s["fact_accuracy"]["order"], 0.90, ">="),
    ("fact accuracy, policy questions >= 0.80", lambda s: s["fact_accuracy"]["policy"], 0.80, ">="),
    ("unsupported-claim rate <= 1%", lambda s: s["unsupported_claim_rate"], 0.01, "<="),
    ("leak rate = 0", lambda s: s["leak_rate"], 0.0, "<="),
)


def check_targets(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for the adapter system, met or not, with the measured values."""
    out: list[dict[str, Any]] = []
    adapter = summaries.get("adapter")
    if adapter is not None:
        for name, get, bound, op in TARGETS:
            value = get(adapter)
            met = value is not None and (value >= bound if op == ">=" else value <= bound)
            out.append({"target": name, "value": value, "met": met})
    base = summaries.get("base")
    if adapter is not None and base is not None:
        pairs = [
            ("order fact accuracy", adapter["fact_accuracy"]["order"],
             base["fact_accuracy"]["order"], True),
            ("policy fact accuracy", adapter["fact_accuracy"]["policy"],
             base["fact_accuracy"]["policy"], True),
            ("unsupported-claim rate", adapter["unsupported_claim_rate"],
             base["unsupported_claim_rate"], False),
            ("correct-handoff rate", adapter["correct_handoff_rate"],
             base["correct_handoff_rate"], True),
            ("leak rate", adapter["leak_rate"], base["leak_rate"], False),
        ]
        for name, a, b, higher in pairs:
            if a is None or b is None:
                continue
            better = a > b if higher else a < b
            tie_ok = a == b and (a in (0.0, 1.0))
            out.append({"target": f"adapter beats base: {name}", "value": f"{a} vs {b}",
                        "met": better or tie_ok})
    retrieval = summaries.get("retrieval")
    if adapter is not None and retrieval is not None:
        a, r = adapter["fact_accuracy"]["order"], retrieval["fact_accuracy"]["order"]
        out.append({"target": "adapter beats retrieval-only: order fact accuracy",
                    "value": f"{a} vs {r}", "met": a is not None and r is not None and a > r})
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def markdown(store: str, summaries: dict[str, dict[str, Any]],
             targets: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    systems = list(summaries)
    head = "| metric | " + " | ".join(systems) + " |"
    sep = "| --- |" + " --- |" * len(systems)
    rows = [
        ("fact accuracy: order (status/tracking/items)", lambda s: s["fact_accuracy"]["order"]),
        ("- order status", lambda s: s["fact_accuracy"]["order_status"]),
        ("- tracking", lambda s: s["fact_accuracy"]["order_tracking"]),
        ("- items", lambda s: s["fact_accuracy"]["order_items"]),
        ("fact accuracy: policy", lambda s: s["fact_accuracy"]["policy"]),
        ("unsupported-claim rate (replies)", lambda s: s["unsupported_claim_rate"]),
        ("correct-handoff rate (unanswerable)", lambda s: s["correct_handoff_rate"]),
        ("leak rate", lambda s: s["leak_rate"]),
        ("mean reply length (words)", lambda s: s["mean_reply_words"]),
        ("grounding guard fired (claims)", lambda s: s["guard_fired"]),
        ("questions", lambda s: s["questions"]),
    ]
    lines = [f"### {store} store", "", head, sep]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(get(summaries[s])) for s in systems) + " |")
    if targets:
        lines += ["", "| target | value | met |", "| --- | --- | --- |"]
        lines += [f"| {t['target']} | {_fmt(t['value'])} | {'yes' if t['met'] else 'NO'} |"
                  for t in targets]
    lines += ["", f"_{meta.get('note', '')}_" if meta.get("note") else ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    out_dir: Path, store: str, scored: dict[str, list[Scored]], meta: dict[str, Any]
) -> tuple[Path, Path, str]:
    """``eval-<store>.json`` (summaries, targets, every reply) and ``eval-<store>.md``."""
    summaries = {system: summarise(rows) for system, rows in scored.items()}
    targets = check_targets(summaries)
    md = markdown(store, summaries, targets, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"eval-{store}.json"
    json_path.write_text(json.dumps({
        "store": store, "meta": meta, "summary": summaries, "targets": targets,
        "replies": {s: [asdict(r) for r in rows] for s, rows in scored.items()},
    }, indent=1, ensure_ascii=False) + "\n")
    md_path = out_dir / f"eval-{store}.md"
    md_path.write_text(md)
    return json_path, md_path, md
