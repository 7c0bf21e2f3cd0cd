"""Reports of a replay: a readable text report with a per-turn diff, and JUnit XML for CI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from chatbot.replay.format import ShopperTurn
from chatbot.replay.runner import StepResult, TranscriptResult

_MARK = {True: "ok  ", False: "FAIL"}


def step_diff(step: StepResult, *, all_checks: bool = True) -> list[str]:
    """A turn as lines: what was sent, the reply and its sources, then expected vs actual."""
    lines: list[str] = []
    if isinstance(step.step, ShopperTurn):
        lines.append(f"shopper: {step.step.text!r}")
        reply = step.reply
        if reply is not None and not step.step.expect.no_reply:
            timing = []
            if reply.ttft_ms is not None:
                timing.append(f"first token {reply.ttft_ms:.0f} ms")
            if reply.total_ms is not None:
                timing.append(f"done {reply.total_ms:.0f} ms")
            lines.append(f"bot:     {reply.text!r}" + (f"  ({', '.join(timing)})" if timing
                                                       else ""))
            sources = ", ".join(f"{s.kind} {s.id}" for s in reply.sources) or "(none)"
            lines.append(f"sources: {sources}   handoff: {str(reply.handoff).lower()}")
            if reply.error:
                lines.append(f"error:   {reply.error}")
    else:
        action = step.step.action
        text = f" {step.step.text!r}" if step.step.text else ""
        lines.append(f"agent:   {action}{text}")
    for check in step.checks:
        if check.passed and not all_checks:
            continue
        lines.append(f"  [{_MARK[check.passed]}] {check.name}")
        if not check.passed:
            lines.append(f"      - expected: {check.expected}")
            lines.append(f"      + actual:   {check.actual}")
    return lines


def transcript_diff(result: TranscriptResult, *, all_checks: bool = True) -> str:
    """The whole transcript as a diff; failed turns are marked, setup errors shown first."""
    t = result.transcript
    head = f"{t.name}  [{t.path}]  store {t.store.name}, {t.identity}"
    lines = [head]
    if result.conversation_id:
        lines.append(f"conversation {result.conversation_id}")
    if result.error:
        lines.append(f"ERROR: {result.error}")
    for step in result.steps:
        marker = "" if step.passed else "  <-- failed"
        lines.append(f"{t.turn_label(step.index)}{marker}")
        lines += ["  " + line for line in step_diff(step, all_checks=all_checks)]
    return "\n".join(lines)


def summary_counts(results: Sequence[TranscriptResult]) -> Counter[str]:
    return Counter(r.outcome for r in results)


def text_report(results: Sequence[TranscriptResult], *, verbose: bool = False) -> str:
    """A readable report: one line per transcript, then the diffs of the failures."""
    lines = []
    for r in results:
        extra = f"  ({r.transcript.xfail})" if r.outcome in ("xfailed", "xpassed") else ""
        lines.append(f"{r.outcome.upper():8} {r.transcript.name}  [{r.seconds:.1f}s]{extra}")
    shown = [r for r in results if verbose or r.outcome in ("failed", "xpassed", "xfailed")]
    for r in shown:
        lines += ["", "=" * 78, transcript_diff(r, all_checks=verbose or r.outcome != "failed")]
    counts = summary_counts(results)
    total = sum(r.seconds for r in results)
    parts = [f"{counts[k]} {k}" for k in ("passed", "failed", "xfailed", "xpassed", "skipped")
             if counts[k]]
    lines += ["", f"{len(results)} transcripts: {', '.join(parts) or 'none'} "
              f"({total:.1f}s of replay)"]
    return "\n".join(lines) + "\n"


def junit_xml(results: Sequence[TranscriptResult], suite: str = "transcripts") -> str:
    """JUnit XML: one testcase per transcript, the diff in the failure's text."""
    counts = summary_counts(results)
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(counts["failed"]),
        errors="0",
        skipped=str(counts["skipped"] + counts["xfailed"]),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        t = r.transcript
        case = ET.SubElement(
            root,
            "testcase",
            classname=_classname(t.path),
            name=t.name,
            file=str(t.path),
            line=str(t.line),
            time=f"{r.seconds:.3f}",
        )
        if r.outcome == "failed":
            failed = [s for s in r.steps if not s.passed]
            message = r.error or (
                f"{t.turn_label(failed[0].index)}: "
                + "; ".join(f"{c.name} expected {c.expected}" for c in failed[0].checks
                            if not c.passed)
                if failed else "failed"
            )
            node = ET.SubElement(case, "failure", message=message[:500], type="TranscriptFailure")
            node.text = transcript_diff(r, all_checks=False)
        elif r.outcome == "skipped":
            ET.SubElement(case, "skipped", message=t.skip or "skipped")
        elif r.outcome == "xfailed":
            node = ET.SubElement(case, "skipped", message=f"xfail: {t.xfail}")
            node.text = transcript_diff(r, all_checks=False)
        out = ET.SubElement(case, "system-out")
        out.text = transcript_diff(r)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _classname(path: Path) -> str:
    parts = path.with_suffix("").parts
    if "transcripts" in parts:
        parts = parts[parts.index("transcripts"):]
    return ".".join(parts[-3:])


def write(path: Path, text: str) -> None:
    """Write a report file (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
