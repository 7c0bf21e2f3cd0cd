"""The event log: gap-free seqs, replay coalescing, bot silence in SQL, group commit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatbot.conversations.log import BotSilencedError, NewEvent, append_events, events_after
from chatbot.conversations.models import Conversation
from chatbot.conversations.ownership import Action, transition
from chatbot.conversations.writer import GroupWriter
from chatbot.storage.db import Database
from knowledge_base.stores import get_or_create_store


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'log.db'}")
    yield database
    database.dispose()


def _conv(db: Database) -> int:
    with db.transaction() as session:
        store = get_or_create_store(session, "shop")
        conv = Conversation(store_id=store.id)
        session.add(conv)
        session.flush()
        return conv.id


def _tok(reply: str, text: str) -> NewEvent:
    return NewEvent("token", {"reply_id": reply, "text": text}, reply_id=reply)


def test_seqs_are_consecutive_across_appends(db: Database) -> None:
    conv = _conv(db)
    with db.transaction() as s:
        first = append_events(s, conv, [NewEvent("ack", {"id": "m"}), _tok("r1", "a")])
    with db.transaction() as s:
        second = append_events(s, conv, [_tok("r1", "b"), NewEvent("done", {}, reply_id="r1")])
    assert [e.seq for e in first + second] == [1, 2, 3, 4]
    with db.session() as s:
        assert s.get(Conversation, conv).last_seq == 4


def test_replay_folds_tokens_of_finished_replies_only(db: Database) -> None:
    conv = _conv(db)
    with db.transaction() as s:
        append_events(
            s,
            conv,
            [
                NewEvent("ack", {"id": "m1"}),
                _tok("r1", "a"),
                _tok("r1", "b"),
                NewEvent("done", {"text": "ab"}, reply_id="r1"),
                NewEvent("ack", {"id": "m2"}),
                _tok("r2", "c"),
                NewEvent("note", {"text": "vip"}, internal=True),
            ],
        )
    with db.session() as s:
        replay = [(e.seq, e.kind) for e in events_after(s, conv, 0)]
        assert replay == [(1, "ack"), (4, "done"), (5, "ack"), (6, "token")]
        assert [e.seq for e in events_after(s, conv, 2)] == [4, 5, 6]
        assert [e.seq for e in events_after(s, conv, 2, coalesce=False)] == [3, 4, 5, 6]
        assert [e.kind for e in events_after(s, conv, 6, include_internal=True)] == ["note"]


def test_bot_events_are_refused_in_sql_once_an_agent_owns_it(db: Database) -> None:
    conv = _conv(db)
    with db.transaction() as s:
        transition(s, conv, Action.TAKE_OVER, agent_id=1)
    with pytest.raises(BotSilencedError), db.transaction() as s:
        append_events(s, conv, [_tok("r1", "no")], bot_only=True)
    with db.transaction() as s:  # non-bot events still go in
        assert append_events(s, conv, [NewEvent("agent_message", {"text": "hi"})])[0].seq == 1


async def test_group_writer_commits_many_conversations_and_isolates_refusals(
    db: Database,
) -> None:
    convs = [_conv(db) for _ in range(4)]
    with db.transaction() as s:
        transition(s, convs[0], Action.TAKE_OVER, agent_id=1)
    writer = GroupWriter(db)
    results = await asyncio.gather(
        *(writer.append(c, [_tok("r", "x"), _tok("r", "y")], bot_only=True) for c in convs),
        return_exceptions=True,
    )
    assert isinstance(results[0], BotSilencedError)
    assert [[e.seq for e in r] for r in results[1:]] == [[1, 2]] * 3  # type: ignore[union-attr]
    assert writer.commits <= 2  # grouped, not one commit per conversation
    with db.session() as s:
        assert events_after(s, convs[0], 0) == []
        assert len(events_after(s, convs[3], 0)) == 2


def _outcome(action_id: str, status: str) -> NewEvent:
    return NewEvent("action", {"id": action_id, "kind": "cancel_order", "status": status,
                               "summary": "", "reason": ""})


def test_an_action_outcome_is_stored_once_per_id_and_status(db: Database) -> None:
    from chatbot.conversations.log import append_action_events, told_actions

    conv = _conv(db)
    with db.transaction() as s:
        twice = [_outcome("act_a", "awaiting_approval")] * 2
        first = append_action_events(s, conv, twice)
    with db.transaction() as s:
        again = append_action_events(
            s, conv, [_outcome("act_a", "awaiting_approval"), _outcome("act_a", "executed"),
                      _outcome("act_b", "expired")])
    assert [e.seq for e in first] == [1]
    assert [(e.payload["id"], e.payload["status"], e.seq) for e in again] == [
        ("act_a", "executed", 2), ("act_b", "expired", 3)]
    with db.session() as s:
        assert told_actions(s, conv) == {("act_a", "awaiting_approval"), ("act_a", "executed"),
                                         ("act_b", "expired")}
    with pytest.raises(Exception, match="does not exist"), db.transaction() as s:
        append_action_events(s, conv + 99, [_outcome("act_c", "declined")])
