"""ChatSession and order actions (issue #19): the ``confirm`` frame without a socket."""

from __future__ import annotations

import pytest

from chatbot.actions.service import ActionIdError
from chatbot.session import chat as s
from tests.unit.test_chat_session import (
    CONV_ID,
    TOKEN,
    World,
    conv,
    frames,
    hello,
    kinds,
    send,
    session,
)


def resumed(world: World) -> s.ChatSession:
    sess = session()
    world.resumable = conv()
    hello(sess, world, conversation_id=CONV_ID, resume_token=TOKEN)
    return sess


def test_a_confirm_is_checked_stored_as_a_message_and_answered_by_a_reply() -> None:
    world = World()
    sess = resumed(world)
    out = send(sess, world, type="confirm", action_id="act_1", accept=True)
    assert kinds(out) == ["FrameAllowed", "MessageAllowed", "CheckAction", "Fresh", "CanQueue",
                          "StoreMessage", "SubmitReply"]
    assert out[2] == s.CheckAction(sess.conv, "act_1")  # type: ignore[arg-type]
    assert out[5] == s.StoreMessage(sess.conv, "k_act_1", "Confirm")  # type: ignore[arg-type]
    assert out[-1] == s.SubmitReply(sess.conv, "k_act_1", "Confirm", 3,  # type: ignore[arg-type]
                                    confirm=("act_1", True))
    no = send(sess, world, type="confirm", action_id="act_2", accept=False)
    assert no[-1].text == "Keep my order" and no[-1].confirm == ("act_2", False)


@pytest.mark.parametrize("code", ["unknown_action", "action_expired", "action_used"])
def test_a_bad_action_id_is_an_error_and_nothing_is_stored(code: str) -> None:
    world = World()
    sess = resumed(world)
    world.raises[s.CheckAction] = ActionIdError("no", code=code)
    out = send(sess, world, type="confirm", action_id="act_x", accept=True)
    assert [(f["type"], f["code"], f["ref"]) for f in frames(out)] == [("error", code, "act_x")]
    assert "StoreMessage" not in kinds(out) and "SubmitReply" not in kinds(out)


def test_before_anything_is_stored_every_action_id_is_unknown() -> None:
    sess, world = session(), World()
    hello(sess, world)
    out = send(sess, world, type="confirm", action_id="act_1", accept=True)
    assert [f["code"] for f in frames(out)] == ["unknown_action"]
    assert "CreateConversation" not in kinds(out)


def test_a_confirm_spends_from_the_message_limits_and_the_queue() -> None:
    world = World(allowed=False)
    sess = resumed(world)
    out = send(sess, world, type="confirm", action_id="act_1", accept=True)
    assert [f["code"] for f in frames(out)] == ["rate_limited"]
    assert "CheckAction" not in kinds(out)
    world.allowed, world.queue_room = True, False
    out = send(sess, world, type="confirm", action_id="act_1", accept=True)
    assert [(f["code"], f["ref"]) for f in frames(out)] == [("queue_full", "act_1")]


def test_a_second_confirm_of_the_same_proposal_gets_the_first_ack_again() -> None:
    world = World(duplicate=True)
    sess = resumed(world)
    out = send(sess, world, type="confirm", action_id="act_1", accept=False)
    assert frames(out)[-1]["type"] == "ack" and frames(out)[-1]["id"] == "k_act_1"
    assert "SubmitReply" not in kinds(out)


def test_outcome_events_are_forwarded_like_other_stored_events() -> None:
    from chatbot.conversations.hub import HubItem, StoredEvent

    world = World()
    sess = resumed(world)
    event = StoredEvent(7, 5, "action", {"id": "act_1", "kind": "cancel_order",
                                         "status": "executed", "summary": "x", "reason": ""})
    (sent,) = sess.forward(HubItem(7, 1, stored=event))
    assert '"type":"action"' in sent.frame and '"seq":5' in sent.frame
    assert sess.forward(HubItem(7, 1, stored=event)) == []


def test_while_an_agent_owns_the_conversation_a_confirm_is_refused() -> None:
    world = World(state="agent")
    sess = resumed(world)
    out = send(sess, world, type="confirm", action_id="act_1", accept=True)
    assert [(f["code"], f["ref"]) for f in frames(out)] == [("not_allowed", "act_1")]
    assert "StoreMessage" not in kinds(out)
