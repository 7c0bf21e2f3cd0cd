"""ChatSession without a socket: literal frames in, effects out, results scripted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from chatbot import identity
from chatbot.conversations.hub import HubItem, StoredEvent
from chatbot.conversations.log import ConversationRef
from chatbot.conversations.ownership import Action
from chatbot.errors import ConflictError, NotFoundError
from chatbot.server.pump import drive
from chatbot.session import chat as s
from chatbot.session.chat import ChatSession, Phase

SECRET = "s3cret"
CONV_ID = "c_" + "A" * 16
TOKEN = "r_" + "B" * 32


@dataclass(frozen=True)
class Store:
    id: int = 1
    allowed_origins: tuple[str, ...] = ()
    identity_secret: str = SECRET


def conv(state: str = "bot", customer_id: int | None = None, public_id: str = CONV_ID) -> Any:
    return ConversationRef(7, public_id, 1, customer_id, state, 1, 0)


@dataclass
class World:
    """Scripted answers to the session's requests; every effect is recorded."""

    store: Store | None = field(default_factory=Store)
    customers: dict[str, tuple[int, str]] = field(default_factory=dict)
    resumable: Any = None
    taken: bool = False
    replay: tuple[list[StoredEvent], int] = ([], 0)
    state: str = "bot"
    allowed: bool = True
    handoffs_allowed: bool = True
    queue_room: bool = True
    duplicate: bool = False
    raises: dict[type, Exception] = field(default_factory=dict)
    effects: list[Any] = field(default_factory=list)

    def answer(self, effect: Any) -> Any:
        if type(effect) in self.raises:
            raise self.raises.pop(type(effect))
        answers: dict[type, Callable[[Any], Any]] = {
            s.FrameAllowed: lambda e: True,
            s.FindStore: lambda e: self.store,
            s.FindCustomer: lambda e: self.customers.get(e.customer),
            s.FindConversation: lambda e: self.resumable,
            s.IdTaken: lambda e: self.taken,
            s.CreateConversation: lambda e: conv(customer_id=e.customer_id, public_id=e.public_id),
            s.Replay: lambda e: self.replay,
            s.Fresh: lambda e: replace(e.conv, state=self.state),
            s.MessageAllowed: lambda e: self.allowed,
            s.HandoffAllowed: lambda e: self.handoffs_allowed,
            s.CanQueue: lambda e: self.queue_room,
            s.StoreMessage: lambda e: (
                StoredEvent(7, 3, "ack", {"id": e.id, "text": e.text, "at": "t"}), self.duplicate
            ),
        }
        handler = answers.get(type(effect))
        return handler(effect) if handler else None

    def run(self, steps: Any) -> list[Any]:
        """Drive a session's steps to the end through the socket pumps' own loop."""
        out: list[Any] = []

        async def perform(effect: Any) -> Any:
            out.append(effect)
            return self.answer(effect)

        asyncio.run(drive(steps, perform))
        self.effects += out
        return out


def session(origin: str | None = "https://shop.example") -> ChatSession:
    return ChatSession(
        origin=origin,
        max_message_chars=20,
        new_conversation_id=lambda: "c_new0000000000000",
        new_resume_token=lambda: TOKEN,
    )


def frames(effects: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(e.frame) for e in effects if isinstance(e, s.Send)]


def kinds(effects: list[Any]) -> list[str]:
    return [type(e).__name__ for e in effects]


def send(sess: ChatSession, world: World, **fields: Any) -> list[Any]:
    return world.run(sess.receive_frame(json.dumps({"v": 1, **fields})))


def hello(sess: ChatSession, world: World, **fields: Any) -> list[Any]:
    return send(sess, world, type="hello", store="demo-key", **fields)


# ---- hello --------------------------------------------------------------------------------


def test_a_message_before_hello_is_refused_and_the_session_still_waits() -> None:
    sess, world = session(), World()
    out = send(sess, world, type="message", id="m1", text="hi")
    assert [f["code"] for f in frames(out)] == ["hello_required"]
    assert sess.phase is Phase.AWAITING_HELLO


def test_a_new_guest_gets_a_fresh_conversation_and_a_resume_token() -> None:
    sess, world = session(), World()
    out = hello(sess, world)
    (welcome,) = frames(out)
    assert welcome["type"] == "welcome" and welcome["resumed"] is False
    assert welcome["conversation_id"] == "c_new0000000000000"
    assert welcome["resume_token"] == TOKEN
    assert welcome["customer"] == {"verified": False, "name": ""}
    assert welcome["max_message_chars"] == 20
    assert "Follow" not in kinds(out) and "StartPump" not in kinds(out)  # nothing stored yet
    assert sess.phase is Phase.OPEN and not sess.verified


@pytest.mark.parametrize(
    ("store", "code"),
    [(None, "unknown_store"), (Store(allowed_origins=("https://other.example",)),
                               "origin_not_allowed")],
)
def test_an_unknown_store_or_a_foreign_page_is_closed_with_1008(store: Any, code: str) -> None:
    sess, world = session(), World(store=store)
    out = hello(sess, world)
    assert [f["code"] for f in frames(out)] == [code]
    assert out[-1] == s.Close(1008, out[-1].reason)
    assert sess.phase is Phase.CLOSED
    # A closed session ignores whatever still arrives.
    assert frames(send(sess, world, type="message", id="m", text="hi")) == []


def test_a_valid_identity_makes_a_verified_session_without_resume_token() -> None:
    sess, world = session(), World(customers={"cust_1": (42, "Leo")})
    out = hello(sess, world, identity=identity.sign(SECRET, "cust_1"))
    assert s.FindCustomer(1, "cust_1") in out
    (welcome,) = frames(out)
    assert welcome["customer"] == {"verified": True, "name": "Leo"}
    assert welcome["resume_token"] is None
    assert sess.verified and sess.customer_id == 42


@pytest.mark.parametrize("token", ["forged.token", identity.sign("other", "cust_1"),
                                   identity.sign(SECRET, "nobody")])
def test_a_bad_identity_is_an_error_and_the_session_goes_on_as_guest(token: str) -> None:
    sess, world = session(), World(customers={"cust_1": (42, "Leo")})
    error, welcome = frames(hello(sess, world, identity=token))
    assert error["code"] == "invalid_identity"
    assert welcome["type"] == "welcome" and welcome["customer"]["verified"] is False
    assert welcome["resume_token"] == TOKEN and not sess.verified


def test_resume_follows_replays_then_welcomes_then_pumps() -> None:
    events = [StoredEvent(7, 4, "ack", {"id": "m1", "text": "hi", "at": "t"}),
              StoredEvent(7, 5, "status", {"kind": "agent_joined", "text": "Sam joined.",
                                           "agent": "Sam", "state": "agent"})]
    sess, world = session(), World(resumable=conv(state="agent"), replay=(events, 6))
    out = hello(sess, world, conversation_id=CONV_ID, resume_token=TOKEN, last_seq=3)
    assert kinds(out) == ["FrameAllowed", "FindStore", "FindConversation", "Follow", "Replay",
                          "Send", "StartPump"]
    assert s.Replay(conv(state="agent"), 3) in out
    (welcome,) = frames(out)
    assert welcome["resumed"] is True and welcome["seq"] == 6 and welcome["state"] == "agent"
    assert [e["seq"] for e in welcome["events"]] == [4, 5]
    assert welcome["resume_token"] == TOKEN  # a guest's conversation keeps its token
    assert sess.delivered == 6 and sess.owner == "agent"


def test_a_conversation_that_is_not_yours_starts_a_new_one() -> None:
    sess, world = session(), World(resumable=None, taken=True)
    error, welcome = frames(hello(sess, world, conversation_id=CONV_ID, resume_token=TOKEN))
    assert error["code"] == "conversation_not_found"
    assert welcome["resumed"] is False and welcome["conversation_id"] != CONV_ID


def test_an_announced_but_never_stored_id_is_adopted_with_its_token() -> None:
    sess, world = session(), World(resumable=None, taken=False)
    out = hello(sess, world, conversation_id=CONV_ID, resume_token=TOKEN)
    (welcome,) = frames(out)
    assert welcome["resumed"] is True and welcome["conversation_id"] == CONV_ID
    assert s.IdTaken(CONV_ID) in out and "Follow" not in kinds(out)
    assert sess.unsaved == (CONV_ID, TOKEN)


def test_a_guest_cannot_adopt_an_id_without_a_well_formed_token() -> None:
    sess, world = session(), World(resumable=None, taken=False)
    out = hello(sess, world, conversation_id=CONV_ID, resume_token="r_short")
    assert frames(out)[0]["code"] == "conversation_not_found"
    assert "IdTaken" not in kinds(out)


def test_new_conversation_ignores_the_id_sent() -> None:
    sess, world = session(), World(resumable=conv())
    out = hello(sess, world, conversation_id=CONV_ID, resume_token=TOKEN, new_conversation=True)
    assert "FindConversation" not in kinds(out)
    assert frames(out)[0]["conversation_id"] == "c_new0000000000000"


def test_a_second_hello_is_an_error() -> None:
    sess, world = session(), World()
    hello(sess, world)
    assert [f["code"] for f in frames(hello(sess, world))] == ["already_started"]


def test_timeouts_close_the_socket() -> None:
    assert session().hello_timeout()[-1] == s.Close(1008, "hello timeout")
    assert session().idle_timeout()[-1] == s.Close(1001, "idle timeout")
    assert session().fell_behind()[-1].code == 1013


# ---- messages -------------------------------------------------------------------------------


def test_the_first_message_stores_the_conversation_then_the_message_then_asks_for_a_reply() -> None:
    sess, world = session(), World()
    hello(sess, world)
    out = send(sess, world, type="message", id="m1", text="where is my order?")
    assert kinds(out) == ["FrameAllowed", "MessageAllowed", "CreateConversation", "Follow",
                          "Replay", "StartPump", "CanQueue", "StoreMessage", "SubmitReply"]
    assert out[2] == s.CreateConversation(1, None, "c_new0000000000000", TOKEN)
    assert out[-1] == s.SubmitReply(sess.conv, "m1", "where is my order?", 3)  # type: ignore[arg-type]
    # The second message reuses the stored conversation.
    assert "CreateConversation" not in kinds(send(sess, world, type="message", id="m2", text="?"))


@pytest.mark.parametrize(
    ("text", "world", "code"),
    [
        ("x" * 21, World(), "message_too_long"),
        ("   ", World(), "empty_message"),
        ("hi", World(allowed=False), "rate_limited"),
        ("hi", World(queue_room=False), "queue_full"),
    ],
)
def test_a_refused_message_is_not_stored(text: str, world: World, code: str) -> None:
    sess = session()
    hello(sess, world)
    out = send(sess, world, type="message", id="m9", text=text)
    assert [(f["code"], f["ref"]) for f in frames(out)] == [(code, "m9")]
    assert "StoreMessage" not in kinds(out)


def test_a_resent_message_gets_its_first_ack_again_and_no_second_reply() -> None:
    sess, world = session(), World(duplicate=True)
    hello(sess, world)
    out = send(sess, world, type="message", id="m1", text="hi")
    assert frames(out)[-1]["type"] == "ack" and frames(out)[-1]["seq"] == 3
    assert "SubmitReply" not in kinds(out)


def test_service_errors_become_error_events_with_the_message_id() -> None:
    sess, world = session(), World(raises={s.StoreMessage: ConflictError("busy", code="conflict")})
    hello(sess, world)
    out = send(sess, world, type="message", id="m1", text="hi")
    assert [(f["code"], f["ref"]) for f in frames(out)] == [("conflict", "m1")]
    world.raises[s.StoreMessage] = RuntimeError("bug")
    assert frames(send(sess, world, type="message", id="m2", text="hi"))[-1]["code"] == (
        "internal_error"
    )


def test_before_anything_is_stored_feedback_is_not_found_and_the_rest_is_ignored() -> None:
    sess, world = session(), World()
    hello(sess, world)
    out = send(sess, world, type="feedback", reply_id="r_1", rating=1)
    assert [f["code"] for f in frames(out)] == ["not_found"]
    assert kinds(send(sess, world, type="typing")) == ["FrameAllowed"]
    for frame in ({"type": "stop"}, {"type": "end"}):
        assert kinds(send(sess, world, **frame)) == ["FrameAllowed", "MessageAllowed"]


@pytest.mark.parametrize("frame", [{"type": "end"}, {"type": "stop"}, {"type": "handoff"},
                                   {"type": "feedback", "reply_id": "r_1", "rating": 1}])
def test_every_shopper_action_spends_from_the_message_limits(frame: dict[str, Any]) -> None:
    sess, world = session(), World(resumable=conv(), allowed=False)
    hello(sess, world, conversation_id=CONV_ID, resume_token=TOKEN)
    out = send(sess, world, **frame)
    assert [f["code"] for f in frames(out)] == ["rate_limited"]
    assert kinds(out) == ["FrameAllowed", "MessageAllowed", "Send"]


def test_typing_feedback_stop_and_end_go_to_the_stored_conversation() -> None:
    sess, world = session(), World(resumable=conv())
    hello(sess, world, conversation_id=CONV_ID, resume_token=TOKEN)
    c = sess.conv
    assert send(sess, world, type="typing", active=False)[-1] == s.PublishTyping(c, False)  # type: ignore[arg-type]
    world.raises[s.RecordFeedback] = NotFoundError("no reply 'r_x' in this conversation")
    assert frames(send(sess, world, type="feedback", reply_id="r_x", rating=-1))[0]["code"] == (
        "not_found"
    )
    assert send(sess, world, type="stop", reply_id="r_1")[-1] == s.StopReply(c, "stopped", "r_1")  # type: ignore[arg-type]
    assert send(sess, world, type="end", rating=5)[2:] == [
        s.StopReply(c, "ended"), s.EndConversation(c, 5, "")  # type: ignore[arg-type]
    ]


# ---- handoff --------------------------------------------------------------------------------


def test_handoff_stores_the_conversation_and_asks_for_a_person() -> None:
    sess, world = session(), World()
    hello(sess, world)
    out = send(sess, world, type="handoff", reason="a human please")
    assert "HandoffAllowed" in kinds(out) and "CreateConversation" in kinds(out)
    assert out[-1] == s.Transition(sess.conv, Action.REQUEST_HANDOFF, "a human please")  # type: ignore[arg-type]


def test_handoff_retries_a_lost_race_and_stops_once_someone_owns_it() -> None:
    sess, world = session(), World(resumable=conv())
    hello(sess, world, conversation_id=CONV_ID, resume_token=TOKEN)
    world.raises[s.Transition] = ConflictError("raced", code="conflict")
    out = send(sess, world, type="handoff")
    assert kinds(out).count("Transition") == 2
    world.state = "agent"
    out = send(sess, world, type="handoff")
    assert "Transition" not in kinds(out) and "HandoffAllowed" not in kinds(out)


def test_handoffs_over_the_per_address_cap_are_refused() -> None:
    sess, world = session(), World(handoffs_allowed=False)
    hello(sess, world)
    out = send(sess, world, type="handoff")
    assert [f["code"] for f in frames(out)] == ["rate_limited"]
    assert "CreateConversation" not in kinds(out)


# ---- live events ----------------------------------------------------------------------------


def test_forward_sends_each_stored_event_once_and_stamps_ephemeral_ones() -> None:
    sess = session()
    token = HubItem(7, 1, stored=StoredEvent(7, 4, "token", {"reply_id": "r", "text": "Hi"}))
    assert [json.loads(x.frame)["seq"] for x in sess.forward(token)] == [4]
    assert sess.forward(token) == [] and sess.replying
    note = StoredEvent(7, 5, "note", {"text": "vip"}, internal=True)
    assert sess.forward(HubItem(7, 1, stored=note)) == []
    typing = {"type": "status", "kind": "typing", "text": "", "agent": None, "state": None}
    assert sess.forward(HubItem(7, 1, ephemeral=typing, audience="agents")) == []
    (thinking,) = sess.forward(HubItem(7, 1, ephemeral={**typing, "kind": "thinking"}))
    assert json.loads(thinking.frame)["seq"] == 4
    (error,) = sess.forward(HubItem(7, 1, ephemeral={"type": "error", "code": "not_ready",
                                                      "message": "starting", "ref": "m1"}))
    assert error.error_code == "not_ready"
    done = StoredEvent(7, 6, "done", {"reply_id": "r", "text": "Hi"})
    sess.forward(HubItem(7, 1, stored=done))
    assert not sess.replying


def test_the_owner_follows_stored_status_events_to_handed_over() -> None:
    sess = session()
    for seq, state in ((1, "waiting"), (2, "agent"), (3, "resolved")):
        status = {"kind": "x", "text": "", "agent": None, "state": state}
        sess.forward(HubItem(7, 1, stored=StoredEvent(7, seq, "status", status)))
        assert sess.owner == state
