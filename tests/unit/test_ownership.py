"""The ownership state machine: allowed moves, refused moves, and one winner per race."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chatbot.conversations import ownership
from chatbot.conversations.models import AGENT, BOT, RESOLVED, WAITING, Conversation
from chatbot.conversations.ownership import Action, next_state, transition
from chatbot.errors import ConflictError
from chatbot.storage.db import Database
from knowledge_base.stores import get_or_create_store


@pytest.mark.parametrize(
    ("state", "action", "after"),
    [
        (BOT, Action.REQUEST_HANDOFF, WAITING),
        (WAITING, Action.TAKE_OVER, AGENT),
        (BOT, Action.TAKE_OVER, AGENT),
        (AGENT, Action.HAND_BACK, BOT),
        (WAITING, Action.HAND_BACK, BOT),
        (AGENT, Action.RESOLVE, RESOLVED),
        (BOT, Action.RESOLVE, RESOLVED),
        (RESOLVED, Action.REOPEN, BOT),
    ],
)
def test_allowed_transitions(state: str, action: Action, after: str) -> None:
    assert next_state(state, action) == after


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (BOT, Action.HAND_BACK),
        (BOT, Action.REOPEN),
        (AGENT, Action.REQUEST_HANDOFF),
        (RESOLVED, Action.TAKE_OVER),
        (RESOLVED, Action.HAND_BACK),
        (RESOLVED, Action.RESOLVE),
        (WAITING, Action.REQUEST_HANDOFF),
    ],
)
def test_refused_transitions(state: str, action: Action) -> None:
    with pytest.raises(ConflictError) as info:
        next_state(state, action)
    assert info.value.code == "not_allowed"


def test_bot_may_speak_only_without_a_human() -> None:
    assert {BOT, WAITING} == ownership.BOT_MAY_SPEAK


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'own.db'}")
    yield database
    database.dispose()


def _conversation(db: Database) -> int:
    with db.transaction() as session:
        store = get_or_create_store(session, "shop")
        conv = Conversation(store_id=store.id)
        session.add(conv)
        session.flush()
        return conv.id


def test_persisted_transition_bumps_version_and_records_agent(db: Database) -> None:
    conv_id = _conversation(db)
    with db.transaction() as session:
        move = transition(session, conv_id, Action.TAKE_OVER, agent_id=7, agent_name="Sam")
    assert (move.old_state, move.new_state, move.version) == (BOT, AGENT, 1)
    with db.session() as session:
        conv = session.get(Conversation, conv_id)
        assert (conv.state, conv.version, conv.agent_id, conv.agent_name) == (AGENT, 1, 7, "Sam")
    with db.transaction() as session:
        transition(session, conv_id, Action.HAND_BACK)
    with db.session() as session:
        conv = session.get(Conversation, conv_id)
        assert (conv.state, conv.version, conv.agent_id) == (BOT, 2, None)


def test_stale_expected_version_is_a_conflict(db: Database) -> None:
    conv_id = _conversation(db)
    with db.transaction() as session:
        transition(session, conv_id, Action.REQUEST_HANDOFF)
    with pytest.raises(ConflictError) as info, db.transaction() as session:
        transition(session, conv_id, Action.TAKE_OVER, agent_id=1, expected_version=0)
    assert info.value.code == "conflict"


def test_second_takeover_loses(db: Database) -> None:
    conv_id = _conversation(db)
    with db.transaction() as session:
        transition(session, conv_id, Action.TAKE_OVER, agent_id=1, agent_name="A")
    with pytest.raises(ConflictError) as info, db.transaction() as session:
        transition(session, conv_id, Action.TAKE_OVER, agent_id=2, agent_name="B")
    assert info.value.code == "conflict"


def test_concurrent_takeovers_have_exactly_one_winner(db: Database) -> None:
    for _ in range(5):
        conv_id = _conversation(db)
        barrier = threading.Barrier(8)
        results: list[str] = []

        def take(
            agent: int,
            conv_id: int = conv_id,
            barrier: threading.Barrier = barrier,
            results: list[str] = results,
        ) -> None:
            barrier.wait()
            try:
                with db.transaction() as session:
                    transition(session, conv_id, Action.TAKE_OVER, agent_id=agent)
                results.append(f"won:{agent}")
            except ConflictError:
                results.append("lost")

        threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if r.startswith("won")]
        assert len(winners) == 1 and len(results) == 8
        with db.session() as session:
            conv = session.get(Conversation, conv_id)
            assert conv.version == 1
            assert f"won:{conv.agent_id}" == winners[0]
