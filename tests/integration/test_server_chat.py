"""The real server and a real websockets client: message types, resume, identity, ownership."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from chatbot import identity
from chatbot.conversations.models import ChatMessage, GuestVerification
from chatbot.conversations.ownership import Action
from chatbot.types import Source
from tests.fakes import FakeAnswerer
from tests.integration.server_support import (
    Running,
    conversation_ref,
    running_server,
    stored_seqs,
)


@pytest.fixture
async def srv(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_server(tmp_path) as running:
        yield running


def _messages(srv: Running, role: str) -> list[ChatMessage]:
    with srv.db.session() as session:
        return list(session.scalars(select(ChatMessage).where(ChatMessage.role == role)))


async def test_hello_message_tokens_done(srv: Running) -> None:
    srv.fake.queue(
        ["Standard ", "shipping ", "takes ", "3-5 days."],
        sources=[Source("policy", "shipping-policy", "Shipping policy")],
    )
    async with srv.client() as c:
        welcome = await c.hello()
        assert welcome["v"] == 1 and welcome["seq"] == 0 and welcome["state"] == "bot"
        assert welcome["conversation_id"].startswith("c_") and welcome["resume_token"]
        assert welcome["events"] == [] and welcome["resumed"] is False
        frames = await c.ask("How long does shipping take?", "m_1")
    ack, thinking = frames[0], frames[1]
    assert ack == {
        "v": 1,
        "type": "ack",
        "seq": 1,
        "id": "m_1",
        "text": "How long does shipping take?",
        "at": ack["at"],
    }
    assert thinking["type"] == "status" and thinking["kind"] == "thinking"
    tokens = [f for f in frames if f["type"] == "token"]
    done = frames[-1]
    assert [t["text"] for t in tokens] == ["Standard ", "shipping ", "takes ", "3-5 days."]
    assert [t["seq"] for t in tokens] == [2, 3, 4, 5] and done["seq"] == 6
    assert {t["reply_id"] for t in tokens} == {done["reply_id"]}
    assert done["text"] == "Standard shipping takes 3-5 days." and not done["interrupted"]
    assert done["sources"] == [
        {"kind": "policy", "id": "shipping-policy", "title": "Shipping policy", "url": ""}
    ]
    (reply,) = _messages(srv, "bot")
    assert (reply.text, reply.status, reply.seq) == (done["text"], "complete", 6)
    (shopper,) = _messages(srv, "shopper")
    assert (shopper.public_id, shopper.seq) == ("m_1", 1)
    assert srv.fake.requests[0].message == "How long does shipping take?"
    assert srv.fake.requests[0].customer_id is None


async def test_history_reaches_the_answerer(srv: Running) -> None:
    async with srv.client() as c:
        await c.hello()
        await c.ask("first question")
        await c.ask("second question")
    history = srv.fake.requests[1].history
    assert [t.role for t in history] == ["shopper", "bot"]
    assert history[0].text == "first question"


async def test_typing_feedback_handoff_stop_end(srv: Running) -> None:
    inbox = srv.app.hub.subscribe_store(1)
    async with srv.client() as c:
        welcome = await c.hello()
        done = (await c.ask("hello"))[-1]
        # typing reaches agents, never echoes to the shopper
        while not inbox.queue.empty():
            inbox.queue.get_nowait()
        await c.send(type="typing", active=True)
        item = await asyncio.wait_for(inbox.get(), 2)
        assert item.ephemeral and item.ephemeral["kind"] == "typing" and item.audience == "agents"
        # feedback on a real reply is stored; on an unknown one is an error
        await c.send(type="feedback", reply_id=done["reply_id"], rating=-1, comment="meh")
        await c.send(type="feedback", reply_id="r_nope", rating=1)
        err = (await c.until("error"))[-1]
        assert err["code"] == "not_found" and err["seq"] == done["seq"]
        (reply,) = _messages(srv, "bot")
        assert (reply.rating, reply.feedback_comment) == (-1, "meh")
        # stop cuts a streaming reply: done marked interrupted with the streamed text
        srv.fake.queue(["one ", "two ", "three"], pause_at=2)
        await c.send(type="message", id="m_stop", text="count")
        await srv.fake.wait_paused()
        await c.until(lambda f: f["type"] == "token" and f["text"] == "two ")
        await c.send(type="stop", reply_id=None)
        cut = (await c.until("done"))[-1]
        assert cut["interrupted"] is True and cut["text"] == "one two "
        srv.fake.release()
        # handoff -> waiting
        await c.send(type="handoff", reason="human please")
        status = (await c.until("status"))[-1]
        assert (status["kind"], status["state"]) == ("handoff_requested", "waiting")
        # end -> resolved with a rating; a new message reopens
        await c.send(type="end", rating=4, comment="fine")
        resolved = (await c.until(lambda f: f.get("kind") == "resolved"))[-1]
        assert resolved["state"] == "resolved"
        frames = await c.ask("one more thing")
        kinds = [(f["type"], f.get("kind")) for f in frames]
        assert ("status", "reopened") in kinds
    ref = conversation_ref(srv.app, srv.db, welcome["conversation_id"])
    assert ref.state == "bot"
    inbox.close()


async def test_agent_takeover_silences_the_bot_mid_stream(srv: Running) -> None:
    srv.fake.queue(["a ", "b ", "c ", "d"], pause_at=2)
    async with srv.client() as c:
        welcome = await c.hello()
        await c.send(type="message", id="m_1", text="question")
        await srv.fake.wait_paused()
        ref = conversation_ref(srv.app, srv.db, welcome["conversation_id"])
        await srv.app.conversations.transition(ref, Action.TAKE_OVER, agent_id=1, agent_name="Sam")
        frames = await c.until("done")
        joined = next(f for f in frames if f.get("kind") == "agent_joined")
        done = frames[-1]
        streamed = "".join(f["text"] for f in frames if f["type"] == "token")
        # The partial reply is exactly what the shopper saw (a batch may be refused).
        assert done["interrupted"] is True and done["text"] == streamed
        assert streamed in ("a ", "a b ")
        assert joined["agent"] == "Sam" and joined["state"] == "agent"
        # no token after the takeover
        assert not [f for f in frames if f["type"] == "token" and f["seq"] > joined["seq"]]
        srv.fake.release()
        assert srv.fake.cancelled == 1
        # while the agent owns it: messages are acked, the bot stays silent
        started = srv.fake.started
        await c.send(type="message", id="m_2", text="are you there?")
        await c.until("ack")
        await srv.app.conversations.add_agent_message(
            ref, "Hi, Sam here.", agent_id=1, agent_name="Sam"
        )
        await srv.app.conversations.add_agent_message(
            ref, "internal: VIP", agent_id=1, agent_name="Sam", internal=True
        )
        msg = (await c.until("agent_message"))[-1]
        assert msg["text"] == "Hi, Sam here." and msg["agent"] == "Sam"
        await asyncio.sleep(0.2)
        assert srv.fake.started == started
        # hand back: the bot answers again
        ref = conversation_ref(srv.app, srv.db, welcome["conversation_id"])
        await srv.app.conversations.transition(ref, Action.HAND_BACK)
        left = (await c.until(lambda f: f.get("kind") == "agent_left"))[-1]
        assert left["state"] == "bot" and "Sam" in left["text"]
        await c.ask("back to the bot")
    assert not [f for f in c.frames if "VIP" in str(f)]


async def test_resume_after_drop_mid_reply_loses_and_duplicates_nothing(srv: Running) -> None:
    srv.fake.queue([f"t{i} " for i in range(30)], delay_s=0.01, pause_at=10)
    async with srv.client() as c:
        welcome = await c.hello()
        await c.send(type="message", id="m_1", text="long answer please")
        await srv.fake.wait_paused()
        seen = await c.until(lambda f: f["type"] == "token" and f["text"] == "t9 ")
        last_seq = max(f["seq"] for f in seen)
    # disconnected while paused; the reply goes on streaming without us
    srv.fake.release()
    await asyncio.sleep(0.05)
    async with srv.client() as c2:
        w2 = await c2.hello(
            conversation_id=welcome["conversation_id"],
            last_seq=last_seq,
            resume_token=welcome["resume_token"],
        )
        assert w2["resumed"] is True and w2["conversation_id"] == welcome["conversation_id"]
        rest = list(w2["events"])
        if not any(e["type"] == "done" for e in rest):
            rest += await c2.until("done")
    received = [f for f in seen + rest if "seq" in f and f["type"] != "status"]
    seqs = [f["seq"] for f in received if f["type"] in ("ack", "token", "done")]
    assert seqs == sorted(set(seqs)), "an event arrived twice or out of order"
    stored = stored_seqs(srv.db, welcome["conversation_id"])
    done = next(f for f in received if f["type"] == "done")
    assert done["text"] == "".join(f"t{i} " for i in range(30)) and not done["interrupted"]
    # every stored event was received, or is a token folded into its reply's done
    missing = [s for s in stored if s[0] not in seqs]
    assert all(kind == "token" and rid == done["reply_id"] for _, kind, rid in missing)
    tokens = "".join(f["text"] for f in received if f["type"] == "token")
    assert done["text"].startswith(tokens[: len("".join(f"t{i} " for i in range(10)))])


async def test_resume_while_streaming_replays_missed_tokens_then_goes_live(srv: Running) -> None:
    srv.fake.queue([f"w{i} " for i in range(12)], pause_at=4, delay_s=0.002)
    async with srv.client() as c:
        welcome = await c.hello()
        await c.send(type="message", id="m_1", text="hi")
        await srv.fake.wait_paused()
        # Tokens reach the log in batches (every 30 ms): wait until w3 is in it, then resume
        # as a client that saw only up to w1.
        seen = await c.until(lambda f: f["type"] == "token" and f["text"] == "w3 ")
        last_seq = next(f["seq"] for f in seen if f["type"] == "token" and f["text"] == "w1 ")
    async with srv.client() as c2:
        w2 = await c2.hello(
            conversation_id=welcome["conversation_id"],
            last_seq=last_seq,
            resume_token=welcome["resume_token"],
        )
        replayed = [e["text"] for e in w2["events"] if e["type"] == "token"]
        assert replayed == ["w2 ", "w3 "]  # streamed while we were away, not yet done
        srv.fake.release()
        live = await c2.until("done")
    tokens = [f for f in live if f["type"] == "token"]
    assert [t["text"] for t in tokens] == [f"w{i} " for i in range(4, 12)]
    all_seqs = [last_seq] + [e["seq"] for e in w2["events"]] + [f["seq"] for f in tokens]
    assert all_seqs == list(range(last_seq, last_seq + len(all_seqs)))


async def test_page_reload_gets_the_history(srv: Running) -> None:
    async with srv.client() as c:
        welcome = await c.hello()
        done = (await c.ask("What is your return window?", "m_1"))[-1]
    async with srv.client() as c2:
        w2 = await c2.hello(
            conversation_id=welcome["conversation_id"], resume_token=welcome["resume_token"]
        )
    kinds = [e["type"] for e in w2["events"]]
    assert kinds == ["ack", "done"]  # tokens of a finished reply fold into its done
    assert w2["events"][1]["text"] == done["text"] and w2["seq"] == done["seq"]


async def test_resent_message_id_is_acked_once_and_answered_once(srv: Running) -> None:
    async with srv.client() as c:
        await c.hello()
        frames = await c.ask("same", "m_dup")
        first_ack = frames[0]
        await c.send(type="message", id="m_dup", text="same")
        again = (await c.until("ack"))[-1]
        assert again["seq"] == first_ack["seq"]
        await asyncio.sleep(0.1)
    assert srv.fake.started == 1 and len(_messages(srv, "shopper")) == 1


async def test_foreign_or_unproven_conversations_are_not_resumable(srv: Running) -> None:
    token1 = identity.sign(srv.secrets["demo"], "cust_1")
    token2 = identity.sign(srv.secrets["demo"], "cust_2")
    async with srv.client() as c:
        guest = await c.hello()
        await c.ask("my secret question")
    async with srv.client() as c:
        verified = await c.hello(identity=token1)
        assert verified["customer"] == {"verified": True, "name": "Cust_1"}
        assert verified["resume_token"] is None
        await c.ask("my order question")
    attempts = [
        {"store": "demo", "conversation_id": guest["conversation_id"]},  # no resume token
        {"store": "demo", "conversation_id": guest["conversation_id"], "resume_token": "r_x"},
        {
            "store": "locked",
            "conversation_id": guest["conversation_id"],
            "resume_token": guest["resume_token"],
        },  # another store
        {"store": "demo", "conversation_id": verified["conversation_id"]},  # guest
        {"store": "demo", "conversation_id": verified["conversation_id"], "identity": token2},
        {"store": "demo", "conversation_id": "c_doesnotexist", "resume_token": "r_x"},
    ]
    for fields in attempts:
        origin = "https://shop.example" if fields["store"] == "locked" else None
        async with srv.client(origin=origin) as c:
            store = fields.pop("store")
            await c.send(type="hello", store=store, **fields)
            frames = await c.until("welcome")
            assert frames[0]["type"] == "error" and frames[0]["code"] == "conversation_not_found"
            welcome = frames[-1]
            assert welcome["resumed"] is False and welcome["events"] == []
            assert welcome["conversation_id"] not in (
                guest["conversation_id"],
                verified["conversation_id"],
            )
    async with srv.client() as c:
        back = await c.hello(conversation_id=verified["conversation_id"], identity=token1)
        assert back["resumed"] is True


async def test_identity_gives_customer_id_and_bad_tokens_fall_back_to_guest(srv: Running) -> None:
    good = identity.sign(srv.secrets["demo"], "cust_2")
    expired = identity.sign(srv.secrets["demo"], "cust_2", ttl_s=1, now=time.time() - 3600)
    forged = identity.sign("not-the-store-secret", "cust_2")
    unknown = identity.sign(srv.secrets["demo"], "cust_nobody")
    async with srv.client() as c:
        w = await c.hello(identity=good)
        assert w["customer"]["verified"] is True
        await c.ask("where is my order")
    assert srv.fake.requests[-1].customer_id == srv.customers["cust_2"]
    for token in (expired, forged, unknown, "garbage"):
        async with srv.client() as c:
            await c.send(type="hello", store="demo", identity=token)
            frames = await c.until("welcome")
            assert frames[0]["code"] == "invalid_identity", token
            assert frames[-1]["customer"]["verified"] is False
            await c.ask("still works as a guest")
        assert srv.fake.requests[-1].customer_id is None


async def test_guest_verified_orders_are_kept_and_passed_on(srv: Running) -> None:
    srv.fake.queue(["Verified."], verified_orders=frozenset({"#W1001"}))
    async with srv.client() as c:
        await c.hello()
        await c.ask("order #W1001, me@example.com")
        status = (await c.until(lambda f: f.get("kind") == "verified"))[-1]
        assert "#W1001" in status["text"]
        await c.ask("where is it?")
    assert srv.fake.requests[-1].verified_orders == frozenset({"#W1001"})
    with srv.db.session() as session:
        assert session.scalars(select(GuestVerification.order_number)).all() == ["#W1001"]


async def test_asked_human_reply_requests_a_handoff(srv: Running) -> None:
    srv.fake.queue(["I'll get a person."], handoff=True, reason="asked_human")
    async with srv.client() as c:
        await c.hello()
        done = (await c.ask("I want a human"))[-1]
        assert done["handoff"] is True
        status = (await c.until(lambda f: f.get("kind") == "handoff_requested"))[-1]
        assert status["state"] == "waiting"


async def test_answerer_failure_is_an_interrupted_reply_and_an_error(srv: Running) -> None:
    srv.fake.queue(["partial ", "never"], fail_at=1)
    async with srv.client() as c:
        await c.hello()
        await c.send(type="message", id="m_1", text="boom")
        frames = await c.until("error")
        done = next(f for f in frames if f["type"] == "done")
        assert done["interrupted"] is True and done["text"] == "partial "
        assert frames[-1]["code"] == "answer_failed" and frames[-1]["ref"] == "m_1"
        await c.ask("and now?")  # the conversation keeps working


async def test_messages_during_a_reply_are_queued_then_answered_in_order(tmp_path: Path) -> None:
    fake = FakeAnswerer(delay_s=0.01)
    async with running_server(tmp_path, fake=fake) as srv:
        async with srv.client() as c:
            await c.hello()
            for i in range(4):
                await c.send(type="message", id=f"m_{i}", text=f"q{i}")
            frames = await c.until(lambda f: f["type"] == "done" and f["in_reply_to"] == "m_3")
            await c.send(type="message", id="m_4", text="q4")
            await c.until(lambda f: f["type"] == "done" and f["in_reply_to"] == "m_4")
        dones = [f["in_reply_to"] for f in frames if f["type"] == "done"]
        assert dones == ["m_0", "m_1", "m_2", "m_3"]
        assert [r.message for r in fake.requests] == ["q0", "q1", "q2", "q3", "q4"]


async def test_conversations_are_stored_on_their_first_message(srv: Running) -> None:
    from chatbot.conversations.models import Conversation

    def count() -> int:
        with srv.db.session() as session:
            return len(session.scalars(select(Conversation.id)).all())

    async with srv.client() as c:
        welcome = await c.hello()
        await c.send(type="typing", active=True)
        await c.send(type="stop")
    assert count() == 0  # a page view that never chats leaves no row (and no inbox entry)
    # A reload keeps the announced id, silently, and the first message stores it.
    async with srv.client() as c:
        again = await c.hello(
            conversation_id=welcome["conversation_id"], resume_token=welcome["resume_token"]
        )
        assert c.frames[0]["type"] == "welcome"  # no error first
        assert again["conversation_id"] == welcome["conversation_id"] and again["resumed"]
        assert again["resume_token"] == welcome["resume_token"]
        await c.ask("now it exists")
    assert count() == 1
    async with srv.client() as c:  # and it is protected like any other from now on
        await c.send(type="hello", store="demo", conversation_id=welcome["conversation_id"])
        assert (await c.until("welcome"))[0]["code"] == "conversation_not_found"
    async with srv.client() as c:
        back = await c.hello(
            conversation_id=welcome["conversation_id"], resume_token=welcome["resume_token"]
        )
        assert [e["type"] for e in back["events"]] == ["ack", "done"]


async def test_two_tabs_storing_the_same_new_conversation_share_it(srv: Running) -> None:
    async with srv.client() as a:
        welcome = await a.hello()
        async with srv.client() as b:
            await b.hello(
                conversation_id=welcome["conversation_id"], resume_token=welcome["resume_token"]
            )
            await asyncio.gather(
                a.send(type="message", id="m_a", text="from tab a"),
                b.send(type="message", id="m_b", text="from tab b"),
            )
            await a.until(lambda f: f["type"] == "done" and f["in_reply_to"] == "m_b")
            await b.until(lambda f: f["type"] == "done" and f["in_reply_to"] == "m_a")
    assert {m.public_id for m in _messages(srv, "shopper")} == {"m_a", "m_b"}
    for tab in (a, b):  # each tab saw both messages, in seq order, once
        acks = [f["id"] for f in tab.frames if f["type"] == "ack"]
        assert sorted(acks) == ["m_a", "m_b"]
        seqs = [f["seq"] for f in tab.frames if f["type"] in ("ack", "token", "done")]
        assert seqs == sorted(set(seqs))
