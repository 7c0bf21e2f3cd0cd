"""/ws/agent: takeover silences the bot (even mid-stream), hand-back, conflicts, notes, inbox,
copilot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from chatbot.types import Source
from tests.fakes import FakeAnswerer
from tests.integration.agent_support import add_agent, agent_client, quiet, token_for
from tests.integration.server_support import running_server, stored_seqs

SLOW = [f"word{i} " for i in range(60)]


def _kinds_after(events: list[dict[str, Any]], seq: int, kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == kind and e.get("seq", 0) > seq]


async def test_takeover_mid_stream_silences_the_bot_even_with_a_new_message(
    tmp_path: Path,
) -> None:
    fake = FakeAnswerer()
    fake.queue(SLOW, delay_s=0.03)  # the reply being streamed when the agent takes over
    fake.queue(SLOW, delay_s=0.03)  # would answer the message sent mid-stream
    async with running_server(tmp_path, fake=fake) as running:
        add_agent(running.db, "ana@shop.example", ["demo"], name="Ana")
        async with running.client() as shopper, agent_client(
            running, token_for(running.db, "ana@shop.example")
        ) as agent:
            welcome = await shopper.hello()
            cid = welcome["conversation_id"]
            await shopper.send(type="message", id="m1", text="Where is my parcel?")
            await shopper.until("token")
            opened = await agent.open(cid)
            assert opened["state"] == "bot"
            # The console sees the bot's tokens live, as they stream.
            live = await agent.event(lambda e: e["type"] == "token")
            assert live["reply_id"] and live["text"].startswith("word")

            # A second shopper message arrives while the first reply still streams...
            await shopper.send(type="message", id="m2", text="Hello?? Anyone there?")
            await shopper.until(lambda f: f["type"] == "ack" and f["id"] == "m2")
            # ...and the agent takes over mid-stream.
            await agent.act("take_over", cid)
            joined = await agent.event(lambda e: e.get("kind") == "agent_joined")
            assert joined["state"] == "agent" and joined["agent"] == "Ana"
            takeover_seq = joined["seq"]

            frames = await shopper.until(lambda f: f.get("kind") == "agent_joined")
            done = [f for f in frames if f["type"] == "done" and f["in_reply_to"] == "m1"]
            # The shopper keeps listening: the bot must stay silent from now on.
            frames += await quiet(shopper, 1.0)
            assert not _kinds_after(frames, takeover_seq, "token")
            assert not [f for f in frames if f["type"] == "done" and f["in_reply_to"] == "m2"]
            assert not done or done[0]["interrupted"]

            # Another shopper message while the agent owns it: stored, acked, not answered.
            started = fake.started
            await shopper.send(type="message", id="m3", text="I need a refund")
            await shopper.until(lambda f: f["type"] == "ack" and f["id"] == "m3")
            await agent.event(lambda e: e["type"] == "ack" and e["id"] == "m3")
            assert not [f for f in await quiet(shopper, 0.6) if f["type"] in ("token", "done")]
            assert fake.started == started

            # The event log agrees: no bot token or complete reply after the takeover.
            log = stored_seqs(running.db, cid)
            assert [k for s, k, _ in log if s > takeover_seq and k == "token"] == []
            events = {s: k for s, k, _ in log}
            assert events[takeover_seq] == "status"

            # The agent replies; the shopper sees it.
            await agent.act("send", cid, id="a1", text="Hi, I'm Ana. Let me check that for you.")
            got = await shopper.until("agent_message")
            assert got[-1]["text"] == "Hi, I'm Ana. Let me check that for you."
            assert got[-1]["agent"] == "Ana"

            # The reply scripted for the mid-stream message was never even started.
            assert len(fake.scripts) == 1
            fake.scripts.clear()

            # Hand back: the shopper is told, and the bot answers again.
            fake.queue(["Back ", "to ", "the ", "bot."])
            await agent.act("hand_back", cid)
            left = (await shopper.until(lambda f: f.get("kind") == "agent_left"))[-1]
            assert left["state"] == "bot"
            reply = await shopper.ask("Thanks, one more question")
            assert reply[-1]["text"] == "Back to the bot." and not reply[-1]["interrupted"]
            assert any(f["type"] == "token" for f in reply)


async def test_two_agents_one_takeover_wins_and_both_see_the_same_state(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"], name="Ana")
        add_agent(running.db, "bob@shop.example", ["demo"], name="Bob")
        async with running.client() as shopper, agent_client(
            running, token_for(running.db, "ana@shop.example")
        ) as ana, agent_client(running, token_for(running.db, "bob@shop.example")) as bob:
            cid = (await shopper.hello())["conversation_id"]
            await shopper.ask("hello")
            await ana.open(cid)
            await bob.open(cid)
            await asyncio.gather(ana.act("take_over", cid), bob.act("take_over", cid))

            async def outcome(client: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
                frames = await client.until(
                    lambda f: f["type"] == "event" and f["event"].get("kind") == "agent_joined"
                )
                frames += await quiet(client, 0.5)
                joined = [f["event"] for f in frames if f["type"] == "event"
                          and f["event"].get("kind") == "agent_joined"]
                assert len(joined) == 1  # one winner, one status event
                return joined[0], [f for f in frames if f["type"] == "error"]

            (ana_view, ana_errors), (bob_view, bob_errors) = await asyncio.gather(
                outcome(ana), outcome(bob))
            errors = ana_errors + bob_errors
            assert [e["code"] for e in errors] == ["conflict"]
            # Both consoles show the same single winner.
            assert ana_view == bob_view and ana_view["state"] == "agent"
            winner = ana_view["agent"]
            assert (winner == "Ana") == bool(bob_errors)
            assert winner in ("Ana", "Bob")
            loser = bob if winner == "Ana" else ana
            # The owner's typing reaches the shopper (with the name); the loser's does not.
            await loser.act("typing", cid, active=True)
            winner_client = ana if winner == "Ana" else bob
            await winner_client.act("typing", cid, active=True)
            typing = (await shopper.until(lambda f: f.get("kind") == "typing"))[-1]
            assert typing["agent"] == winner and typing["state"] == "agent"
            assert not [f for f in await quiet(shopper, 0.3) if f.get("kind") == "typing"]
            # The loser cannot reply, nor hand back someone else's conversation.
            await loser.act("send", cid, id="x1", text="me too")
            assert (await loser.error())["code"] == "not_allowed"
            await loser.act("hand_back", cid)
            assert (await loser.error())["code"] == "forbidden"
            # Resolve and reopen are seen by both, in the same order.
            await loser.act("resolve", cid)
            for client in (ana, bob):
                ev = await client.event(lambda e: e.get("kind") == "resolved")
                assert ev["state"] == "resolved"
            await ana.act("reopen", cid)
            for client in (ana, bob):
                assert (await client.event(lambda e: e.get("kind") == "reopened"))["state"] == "bot"
            # A transition the state machine does not allow gets its own code.
            await bob.act("reopen", cid)
            assert (await bob.error())["code"] == "not_allowed"


async def test_notes_never_reach_the_shopper(tmp_path: Path) -> None:
    secret = "Customer is a known chargeback risk - check ID"
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"], name="Ana")
        add_agent(running.db, "bob@shop.example", ["demo"], name="Bob")
        async with running.client() as shopper, agent_client(
            running, token_for(running.db, "ana@shop.example")
        ) as ana, agent_client(running, token_for(running.db, "bob@shop.example")) as bob:
            welcome = await shopper.hello()
            cid = welcome["conversation_id"]
            await shopper.ask("I want my money back")
            await ana.open(cid)
            await bob.open(cid)
            await ana.act("note", cid, id="n1", text=secret)
            note = await ana.event(lambda e: e["type"] == "note")
            assert note["text"] == secret and note["agent"] == "Ana" and note["internal"] is True
            # Colleagues see it live...
            assert (await bob.event(lambda e: e["type"] == "note"))["text"] == secret
            # ...and in the transcript when they open it later.
            reopened = await bob.open(cid)
            assert [e["text"] for e in reopened["events"] if e["type"] == "note"] == [secret]

            # A note is allowed in any state; then a real agent message as a sync point.
            await ana.act("take_over", cid)
            await ana.act("note", cid, id="n2", text=secret + " (2)")
            await ana.act("send", cid, id="a1", text="Hi, I'm looking into it.")
            frames = await shopper.until("agent_message")
            frames += await quiet(shopper, 0.5)
            assert all(f["type"] != "note" for f in frames)
            assert all(secret not in str(f) for f in frames)
            # The seq gap where the notes are is all the shopper can tell.
            seqs = [f["seq"] for f in frames if "seq" in f]
            assert seqs == sorted(seqs)

        # Nor on resume, nor in a full history replay.
        async with running.client() as again:
            resumed = await again.hello(conversation_id=cid, last_seq=0,
                                        resume_token=welcome["resume_token"])
            assert resumed["resumed"] is True
            assert any(e["type"] == "agent_message" for e in resumed["events"])
            assert secret not in str(resumed)
        kinds = [k for _, k, _ in stored_seqs(running.db, cid)]  # the shopper-visible log
        assert "note" not in kinds


async def test_inbox_is_live_and_copilot_streams_a_grounded_suggestion(tmp_path: Path) -> None:
    fake = FakeAnswerer()
    async with running_server(tmp_path, fake=fake) as running:
        add_agent(running.db, "ana@shop.example", ["demo"], name="Ana")
        async with agent_client(running, token_for(running.db, "ana@shop.example")) as ana:
            await ana.send(type="subscribe_inbox", store="demo", filter="open")
            snapshot = (await ana.until("inbox"))[-1]
            assert snapshot["conversations"] == [] and snapshot["counts"]["open"] == 0

            async with running.client() as shopper:
                cid = (await shopper.hello())["conversation_id"]
                fake.queue(["I can ", "help ", "with ", "that."], handoff=False)
                await shopper.ask("Where is my order #W2611340? It has not arrived")
                row = (await ana.until(lambda f: f["type"] == "inbox_update"
                                       and f["conversation"]["conversation_id"] == cid))[-1]
                assert row["matches"] and row["conversation"]["state"] == "bot"
                assert row["conversation"]["unread"] >= 1
                # The bot hands off (the shopper asks for a person): waiting, with a summary.
                await shopper.send(type="handoff", reason="I want to talk to a person")
                waiting = (await ana.until(
                    lambda f: f["type"] == "inbox_update"
                    and f["conversation"]["state"] == "waiting"))[-1]
                summary = waiting["conversation"]["summary"]
                assert summary["orders"] == ["#W2611340"]
                assert summary["topic"].startswith("Order")
                assert "has not arrived" in summary["text"]
                assert waiting["conversation"]["waiting_since"]
                assert waiting["counts"]["waiting"] == 1

                # Search and filters.
                await ana.send(type="subscribe_inbox", store="demo", filter="waiting",
                               q="W2611340")
                found = (await ana.until("inbox"))[-1]
                assert [c["conversation_id"] for c in found["conversations"]] == [cid]
                await ana.send(type="subscribe_inbox", store="demo", filter="all", q="nothing like")
                assert (await ana.until("inbox"))[-1]["conversations"] == []

                # Copilot: a suggestion for the latest shopper message, streamed, with sources.
                opened = await ana.open(cid)
                assert opened["state"] == "waiting" and opened["summary"]["orders"]
                fake.queue(["Your order ", "#W2611340 ", "is on its way."],
                           sources=[Source("order", "#W2611340", "Order #W2611340")])
                await ana.act("suggest", cid)
                frames = await ana.until("suggestion_done")
                pieces = [f["text"] for f in frames if f["type"] == "suggestion_token"]
                done = frames[-1]
                assert pieces == ["Your order ", "#W2611340 ", "is on its way."]
                assert done["text"] == "Your order #W2611340 is on its way."
                assert done["sources"] == [{"kind": "order", "id": "#W2611340",
                                            "title": "Order #W2611340", "url": ""}]
                asked = fake.requests[-1]
                assert asked.message == "Where is my order #W2611340? It has not arrived"
                assert asked.conversation_key == f"copilot:{cid}"
                # The suggestion is not sent by itself: the shopper saw nothing of it.
                assert all(f["type"] != "agent_message" for f in await quiet(shopper, 0.3))

                # Take over, send the (edited) suggestion, the shopper gets it.
                await ana.act("take_over", cid)
                await ana.act("send", cid, id="a1", text=done["text"] + " Tracking: 1Z999.")
                msg = (await shopper.until("agent_message"))[-1]
                assert msg["text"] == "Your order #W2611340 is on its way. Tracking: 1Z999."

                # Mark read: unread drops to 0 for this agent.
                await ana.send(type="subscribe_inbox", store="demo", filter="mine")
                await ana.until("inbox")
                await ana.act("mark_read", cid)
                row = (await ana.until(lambda f: f["type"] == "inbox_update"))[-1]
                assert row["matches"] and row["conversation"]["unread"] == 0
                assert row["conversation"]["mine"] is True


async def test_customer_panel_shows_the_verified_identity_and_orders(tmp_path: Path) -> None:
    from datetime import datetime
    from decimal import Decimal

    from chatbot import identity
    from knowledge_base.models import Order
    from knowledge_base.stores import get_store

    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        with running.db.transaction() as session:
            demo = get_store(session, "demo")
            session.add(Order(store_id=demo.id, customer_id=running.customers["cust_1"],
                              number="#W1000001", status="delivered", total=Decimal("42.00"),
                              placed_at=datetime(2026, 10, 1)))
        token = identity.sign(running.secrets["demo"], "cust_1")
        async with running.client() as shopper, agent_client(
            running, token_for(running.db, "ana@shop.example")
        ) as ana:
            welcome = await shopper.hello(identity=token)
            assert welcome["customer"]["verified"] is True
            await shopper.ask("hi")
            opened = await ana.open(welcome["conversation_id"])
            panel = opened["customer"]
            assert panel["verified"] is True and panel["id"] == "cust_1"
            assert panel["email"] == "cust_1@example.com"
            assert [(o["number"], o["status"], o["total_display"]) for o in panel["orders"]] == [
                ("#W1000001", "delivered", "$42.00")]
            # A guest gets no customer data at all.
            async with running.client() as guest:
                gid = (await guest.hello())["conversation_id"]
                await guest.ask("hello")
            panel = (await ana.open(gid))["customer"]
            assert panel["verified"] is False and panel["orders"] == [] and panel["email"] == ""


async def test_a_new_suggestion_or_a_closed_console_stops_the_previous_one(
    tmp_path: Path,
) -> None:
    fake = FakeAnswerer()
    async with running_server(tmp_path, fake=fake) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        async with running.client() as shopper:
            cid = (await shopper.hello())["conversation_id"]
            await shopper.ask("Can I return worn shoes?")
            async with agent_client(running, token_for(running.db, "ana@shop.example")) as ana:
                await ana.open(cid)
                fake.queue(["first ", "draft"], pause_at=1)
                await ana.act("suggest", cid)
                await fake.wait_paused()
                fake.queue(["Yes, ", "within 30 days."])
                await ana.act("suggest", cid)
                done = (await ana.until("suggestion_done"))[-1]
                assert done["text"] == "Yes, within 30 days."
                # The first generation was closed, not left suspended in the engine.
                assert fake.active == 0
                fake.queue(["left ", "behind"], pause_at=1)
                fake.paused.clear()  # still set by the generation that was closed
                await ana.act("suggest", cid)
                await fake.wait_paused()
                assert fake.active == 1
            for _ in range(50):  # the console closed: its suggestion stops too
                if fake.active == 0:
                    break
                await asyncio.sleep(0.05)
            assert fake.active == 0
            fake.release()
