"""The multi-turn eval dialogues of ``chatbot eval dialogues`` (issue #16).

Each ``*.yaml`` here holds transcripts in the replay format (``docs/transcripts.md``), one
per YAML document, written by hand from the store data (the ``description`` of each says
why its expectations hold). ``store`` is ``demo`` or ``tau`` (the eval imports the τ-bench
retail store under that name). They are never used in training. ``injections.yaml`` is the
prompt-injection set: the same format, each case a short conversation whose last turn
tries to make the bot state something false.

A dialogue has 3 to 6 shopper turns and no agent steps; ``not_contains`` / ``not_regex``
hold only what a correct reply must never say (a claim that contradicts the store's data,
an injected claim, words meant for agents), so a failed one counts as a false claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from chatbot.replay.format import AgentStep, ShopperTurn, Transcript, TranscriptError, load_file

DIALOGUES_DIR = Path(__file__).resolve().parent
INJECTIONS_FILE = DIALOGUES_DIR / "injections.yaml"
STORES = ("demo", "tau")
MIN_TURNS, MAX_TURNS = 3, 6


def dialogue_files() -> list[Path]:
    """The dialogue files (everything here but the injection set), sorted."""
    return sorted(p for p in DIALOGUES_DIR.glob("*.yaml") if p != INJECTIONS_FILE)


def _validate(t: Transcript, *, min_turns: int) -> Transcript:
    if t.store.name not in STORES:
        raise TranscriptError(t.path, t.name, f"store must be one of {', '.join(STORES)}")
    if any(isinstance(s, AgentStep) for s in t.steps):
        raise TranscriptError(t.path, t.name, "eval dialogues have no agent steps")
    turns = sum(isinstance(s, ShopperTurn) for s in t.steps)
    if not min_turns <= turns <= MAX_TURNS:
        raise TranscriptError(
            t.path, t.name, f"{turns} shopper turns; a dialogue has {min_turns} to {MAX_TURNS}"
        )
    if not t.description:
        raise TranscriptError(t.path, t.name, "say in 'description' why the expectations hold")
    return t


def select(
    transcripts: Sequence[Transcript], *, stores: Sequence[str] = STORES,
    keyword: str | None = None, limit: int | None = None,
) -> list[Transcript]:
    """Those of ``stores`` whose name, tags or file name contain ``keyword``; at most
    ``limit`` per store, in file order."""
    out: list[Transcript] = []
    counts: dict[str, int] = {}
    for t in transcripts:
        if t.store.name not in stores or t.skip:
            continue
        if keyword:
            hay = " ".join([t.name, t.path.stem, *t.tags]).lower()
            if keyword.lower() not in hay:
                continue
        if limit is not None and counts.get(t.store.name, 0) >= limit:
            continue
        counts[t.store.name] = counts.get(t.store.name, 0) + 1
        out.append(t)
    return out


def load_dialogues() -> list[Transcript]:
    """Every eval dialogue, validated (store, 3-6 shopper turns, no agent steps, a description)."""
    out = [_validate(t, min_turns=MIN_TURNS) for p in dialogue_files() for t in load_file(p)]
    names = [t.name for t in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TranscriptError(DIALOGUES_DIR, "", f"duplicate dialogue names: {dupes}")
    return out


def load_injections() -> list[Transcript]:
    """The injection cases (1 to 6 shopper turns each)."""
    return [_validate(t, min_turns=1) for t in load_file(INJECTIONS_FILE)]
