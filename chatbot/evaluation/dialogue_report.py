"""The multi-turn eval report: per store and system, the issue #16 targets, every turn.

Written to ``bench/results/eval-dialogues.json`` (summaries, targets, failed turns with
their replies, and every turn) and ``eval-dialogues.md`` (the tables).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chatbot.evaluation.conversations import DialogueScore, TurnScore

# Issue #16: "per-turn accuracy >= 0.95, false claims 0, repeats 0 on both stores".
TARGETS = (
    ("per-turn accuracy >= 0.95", "per_turn_accuracy", 0.95, ">="),
    ("false claims = 0", "false_claims", 0, "<="),
    ("repeats = 0", "repeats", 0, "<="),
)


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def summarise(dialogues: Sequence[DialogueScore]) -> dict[str, Any]:
    """Headline figures of one system on one store."""
    turns: list[TurnScore] = [t for d in dialogues for t in d.turns]
    stated = [t for t in turns if t.handoff_expected is not None]
    return {
        "dialogues": len(dialogues),
        "turns": len(turns),
        "per_turn_accuracy": _rate(sum(t.passed for t in turns), len(turns)),
        "dialogue_accuracy": _rate(sum(d.passed for d in dialogues), len(dialogues)),
        "false_claims": sum(t.false_claim for t in turns),
        "unsupported_claims": sum(
            1 for t in turns
            if any(c["name"] == "no_unsupported_claims" for c in t.failed_checks())
        ),
        "repeats": sum(t.repeat for t in turns),
        "handoff_accuracy": _rate(sum(bool(t.handoff_ok) for t in stated), len(stated)),
        "handoff_turns": len(stated),
        "guard_fired": sum(t.guard_fired for t in turns),
        "replies_guarded": sum(1 for t in turns if t.guard_fired),
        "errors": sum(1 for t in turns if t.error),
        "mean_seconds_per_turn": round(sum(t.seconds for t in turns) / max(1, len(turns)), 2),
    }


def check_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, key, bound, op in TARGETS:
        value = summary[key]
        met = value is not None and (value >= bound if op == ">=" else value <= bound)
        out.append({"target": name, "value": value, "met": met})
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


ROWS = (
    ("per-turn accuracy", "per_turn_accuracy"),
    ("dialogues with every turn right", "dialogue_accuracy"),
    ("false claims (turns)", "false_claims"),
    ("- of which unsupported numbers/ids", "unsupported_claims"),
    ("repeats", "repeats"),
    ("handoff accuracy", "handoff_accuracy"),
    ("- turns that state a handoff", "handoff_turns"),
    ("guard fired (claims)", "guard_fired"),
    ("errors", "errors"),
    ("mean seconds per turn", "mean_seconds_per_turn"),
    ("dialogues", "dialogues"),
    ("turns", "turns"),
)


def markdown(summaries: dict[str, dict[str, dict[str, Any]]],
             targets: dict[str, list[dict[str, Any]]], meta: dict[str, Any]) -> str:
    lines: list[str] = []
    for store, by_system in summaries.items():
        systems = list(by_system)
        lines += [f"### {store} store: multi-turn dialogues", "",
                  "| metric | " + " | ".join(systems) + " |",
                  "| --- |" + " --- |" * len(systems)]
        for label, key in ROWS:
            lines.append(f"| {label} | "
                         + " | ".join(_fmt(by_system[s][key]) for s in systems) + " |")
        if targets.get(store):
            lines += ["", "| target (adapter) | value | met |", "| --- | --- | --- |"]
            lines += [f"| {t['target']} | {_fmt(t['value'])} | {'yes' if t['met'] else 'NO'} |"
                      for t in targets[store]]
        lines.append("")
    if meta.get("note"):
        lines.append(f"_{meta['note']}_")
    return "\n".join(lines).rstrip() + "\n"


def failures(dialogues: Sequence[DialogueScore]) -> list[dict[str, Any]]:
    """Every failed turn: where, what was said, and which checks failed."""
    out = []
    for d in dialogues:
        for t in d.turns:
            if t.passed:
                continue
            out.append({
                "store": t.store, "system": t.system, "dialogue": t.dialogue, "turn": t.turn,
                "shopper": t.shopper, "reply": t.reply, "sources": t.sources,
                "handoff": t.handoff, "false_claim": t.false_claim, "repeat": t.repeat,
                "failed": [f"{c['name']}: expected {c['expected']}, got {c['actual']}"
                           for c in t.failed_checks()],
            })
    return out


def _compact(d: DialogueScore) -> dict[str, Any]:
    """A dialogue for the JSON report: each turn keeps its failed checks only (and how many
    ran), so the file stays readable."""
    row = asdict(d)
    for turn in row["turns"]:
        turn["checks_run"] = len(turn["checks"])
        turn["checks"] = [c for c in turn["checks"] if not c["passed"]]
    return row


def write_report(
    out_dir: Path, results: dict[str, dict[str, list[DialogueScore]]], meta: dict[str, Any],
    *, name: str = "eval-dialogues",
) -> tuple[Path, Path, str]:
    """``<name>.json`` and ``<name>.md``; ``results`` is store -> system -> dialogues."""
    summaries = {store: {system: summarise(rows) for system, rows in by_system.items()}
                 for store, by_system in results.items()}
    targets = {store: check_targets(by_system["adapter"])
               for store, by_system in summaries.items() if "adapter" in by_system}
    md = markdown(summaries, targets, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps({
        "meta": meta,
        "summary": summaries,
        "targets": targets,
        "failures": {store: {system: failures(rows) for system, rows in by_system.items()}
                     for store, by_system in results.items()},
        "dialogues": {store: {system: [_compact(d) for d in rows]
                              for system, rows in by_system.items()}
                      for store, by_system in results.items()},
    }, indent=1, ensure_ascii=False) + "\n")
    md_path = out_dir / f"{name}.md"
    md_path.write_text(md)
    return json_path, md_path, md
