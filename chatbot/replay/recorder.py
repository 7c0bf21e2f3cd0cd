"""Turning a stored conversation into a transcript, with the facts its replies relied on pinned.

Each shopper message becomes a turn. What its reply was is written down as checks a
future reply must still meet: the same sources cited, the same backed claims (order
numbers, tracking numbers, prices, dates) still in the text, the same handoff, and no
unsupported claims. A person's part becomes agent steps (take over, send, hand back,
resolve), and a message the bot stayed silent on (a person owned it) becomes
``no_reply``. The stored event log is read through :mod:`chatbot.protocol`, the same
decoding the sockets use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from chatbot.answering.guard import find_unsupported
from chatbot.conversations.log import events_after
from chatbot.conversations.models import Conversation
from chatbot.errors import NotFoundError
from chatbot.protocol import chat
from chatbot.replay.checks import DatabaseEvidence, SourceSeen, supported_pins
from chatbot.replay.format import (
    AgentStep,
    Cite,
    Expectations,
    ShopperTurn,
    Step,
    StoreFixture,
    Transcript,
)
from chatbot.replay.writer import dumps

# Claims pinned per reply at most: enough to catch a wrong fact, few enough to read.
MAX_PINS = 6
_STATUS_STEPS = {"agent_joined": "take_over", "agent_left": "hand_back", "resolved": "resolve"}


@dataclass
class Recording:
    """An exported transcript and notes for its header (what could not be pinned)."""

    transcript: Transcript
    conversation_id: str
    notes: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        header = [
            f"Exported from conversation {self.conversation_id}.",
            "Expectations pin what the recorded replies relied on; edit them to state what",
            "a correct reply must do (see docs/transcripts.md).",
            *self.notes,
        ]
        return dumps([self.transcript], header="\n".join(header))


def export_conversation(db: Any, public_id: str, *, path: Path | None = None) -> Recording:
    """The transcript of conversation ``public_id`` (its public id, e.g. ``c_8Jq2...``)."""
    from knowledge_base.models import Customer, Store

    with db.session() as session:
        conv = session.scalars(
            select(Conversation).where(Conversation.public_id == public_id)
        ).first()
        if conv is None:
            raise NotFoundError(f"no conversation {public_id!r}")
        store = session.get(Store, conv.store_id)
        assert store is not None
        customer = session.get(Customer, conv.customer_id) if conv.customer_id else None
        stored = events_after(session, conv.id, 0, coalesce=True)
        events = [chat.event_from_fields(e.wire()) for e in stored]
        store_name, customer_id = store.name, customer.source_id if customer else None
    evidence = DatabaseEvidence(db)
    steps, notes = _steps(events, store_name, evidence)
    if not any(isinstance(s, ShopperTurn) for s in steps):
        raise NotFoundError(f"conversation {public_id!r} has no shopper message to replay")
    transcript = Transcript(
        name=f"conversation {public_id}",
        path=path or Path(f"{public_id}.yaml"),
        store=StoreFixture(store_name),
        steps=tuple(steps),
        customer=customer_id,
        description=f"Recorded conversation {public_id} in store {store_name}.",
    )
    return Recording(transcript, public_id, notes)


def _steps(
    events: list[chat.ServerEvent], store: str, evidence: DatabaseEvidence
) -> tuple[list[Step], list[str]]:
    done_for = {e.in_reply_to: e for e in events if isinstance(e, chat.Done) and e.in_reply_to}
    steps: list[Step] = []
    notes: list[str] = []
    shopper_texts: list[str] = []
    state = "bot"
    for event in events:
        if isinstance(event, chat.Ack):
            shopper_texts.append(event.text)
            turn, note = _turn(event, done_for.get(event.id), state, store, evidence,
                               shopper_texts, len(steps) + 1)
            steps.append(turn)
            if note:
                notes.append(note)
        elif isinstance(event, chat.Status):
            action = _STATUS_STEPS.get(event.kind)
            if action is not None:
                steps.append(AgentStep(action))
            state = event.state or state
        elif isinstance(event, chat.AgentMessage):
            steps.append(AgentStep("send", event.text))
    return steps, notes


def _turn(
    ack: chat.Ack,
    done: chat.Done | None,
    state: str,
    store: str,
    evidence: DatabaseEvidence,
    shopper_texts: list[str],
    number: int,
) -> tuple[ShopperTurn, str]:
    if done is None:
        if state in ("agent", "resolved"):
            return ShopperTurn(ack.text, Expectations(no_reply=True)), ""
        return ShopperTurn(ack.text), f"turn {number}: no reply was recorded; nothing pinned."
    if done.interrupted:
        note = f"turn {number}: the recorded reply was interrupted; nothing pinned."
        return ShopperTurn(ack.text, note=done.text), note
    sources = [SourceSeen(s.kind, s.id, s.title) for s in done.sources]
    lines = evidence.lines(store, sources)
    unsupported = find_unsupported(done.text, [*lines, *shopper_texts])
    note = ""
    if unsupported:
        note = (f"turn {number}: the recorded reply claims {', '.join(unsupported)} without "
                "a cited source backing it")
        note += "; this transcript fails until that is fixed." if sources else "."
    cites = tuple(dict.fromkeys(Cite(s.kind, s.id) for s in sources))
    expect = Expectations(
        contains=tuple(supported_pins(done.text, lines)[:MAX_PINS]) if sources else (),
        cites=cites,
        handoff=done.handoff,
        # Without sources the only numbers are template examples or a bug; see the notes.
        no_unsupported_claims=bool(sources) or not unsupported,
    )
    return ShopperTurn(ack.text, expect, note=done.text), note
