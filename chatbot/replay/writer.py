"""Writing transcripts back to YAML (the recorder's output), in the form the loader reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from chatbot.replay.format import AgentStep, Step, Transcript


def to_document(t: Transcript) -> dict[str, Any]:
    """The plain-data form of a transcript, ready for ``yaml.safe_dump``."""
    doc: dict[str, Any] = {"name": t.name}
    if t.description:
        doc["description"] = t.description
    if t.store.import_format and t.store.import_path:
        doc["store"] = {
            "name": t.store.name,
            "import": {"format": t.store.import_format, "path": str(t.store.import_path)},
        }
    else:
        doc["store"] = t.store.name
    doc["identity"] = {"customer": t.customer} if t.customer else "guest"
    if t.tags:
        doc["tags"] = list(t.tags)
    if t.xfail:
        doc["xfail"] = t.xfail
    doc["turns"] = [_step_document(s) for s in t.steps]
    return doc


def _step_document(step: Step) -> dict[str, Any]:
    if isinstance(step, AgentStep):
        return {"agent": {"send": step.text} if step.action == "send" else step.action}
    out: dict[str, Any] = {"shopper": step.text}
    e = step.expect
    for key in ("contains", "contains_any", "not_contains", "regex", "not_regex"):
        if getattr(e, key):
            out[key] = list(getattr(e, key))
    for key in ("cites", "cites_any", "not_cites"):
        if getattr(e, key):
            out[key] = [str(c) for c in getattr(e, key)]
    if e.handoff is not None:
        out["handoff"] = e.handoff
    if e.no_unsupported_claims:
        out["no_unsupported_claims"] = True
    if e.max_ttft_ms is not None:
        out["max_ttft_ms"] = e.max_ttft_ms
    if e.no_reply:
        out["no_reply"] = True
    if step.note:
        out["recorded"] = step.note
    return out


def dumps(transcripts: Sequence[Transcript], header: str = "") -> str:
    """YAML text for ``transcripts`` (several become ``---``-separated documents)."""
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    body = yaml.safe_dump_all(
        [to_document(t) for t in transcripts], sort_keys=False, allow_unicode=True, width=100
    )
    return comment + body
