"""Order actions on the wire (issue #19): done.action, confirm frames, stored action events.

The answerer is the scripted fake (what the pipeline does on a confirm is tested in
tests/unit/test_dialogue*.py); the proposals are real rows, so the server's checks of a
confirm's id (store, conversation, expiry, used) run against the database.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from chatbot.actions.models import ActionProposal
from chatbot.conversations.models import ChatMessage
from chatbot.storage.clock import utcnow
from knowledge_base.models import Store
from tests.integration.server_support import (
    Running,
    conversation_ref,
    running_server,
    stored_seqs,
)

SUMMARY = "Cancel order #W5442520 (reason: no longer needed). $54.04 will be refunded."


@pytest.fixture
async def srv(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_server(tmp_path) as running:
        yield running


def add_proposal(srv: Running, conversation_id: str, *, store: str = "demo",
                 status: str = "proposed", minutes: int = 30) -> str:
    with srv.db.transaction() as session:
        store_id = session.scalars(select(Store.id).where(Store.name == store)).one()
        p = ActionProposal(
            store_id=store_id, conversation_id=conversation_id, kind="cancel_order",
            params={"order": "#W5442520", "reason": "no longer needed"}, order_number="#W5442520",
            summary=SUMMARY, details={"order": "#W5442520"}, status=status,
            expires_at=utcnow() + timedelta(minutes=minutes),
        )
        session.add(p)
        session.flush()
        return p.public_id


def wire(action_id: str) -> dict:
    return {"id": action_id, "kind": "cancel_order", "status": "proposed", "summary": SUMMARY,
            "details": {"order": "#W5442520"}}


def outcome(action_id: str, status: str = "executed", reason: str = "") -> dict:
    return {"type": "action", "id": action_id, "kind": "cancel_order", "status": status,
            "summary": SUMMARY, "reason": reason}


def set_status(srv: Running, action_id: str, status: str) -> None:
    with srv.db.transaction() as session:
        session.execute(update(ActionProposal).where(ActionProposal.public_id == action_id)
                        .values(status=status))


async def test_proposal_confirm_and_outcome_event(srv: Running) -> None:
    async with srv.client() as c:
        welcome = await c.hello()
        conv_id = welcome["conversation_id"]
        await c.ask("hello")  # stores the conversation
        action_id = add_proposal(srv, conv_id)
        srv.fake.queue([SUMMARY, " Shall I go ahead?"], action=wire(action_id))
        done = (await c.ask("please cancel #W5442520", "m_2"))[-1]
        assert done["action"] == wire(action_id)

        srv.fake.queue(["Done. Order #W5442520 is cancelled."], action=outcome(action_id))
        await c.send(type="confirm", action_id=action_id, accept=True)
        frames = await c.until(
            lambda f: f["type"] == "done" and f["in_reply_to"] == f"k_{action_id}")
    ack = frames[0]
    assert (ack["type"], ack["id"], ack["text"]) == ("ack", f"k_{action_id}", "Confirm")
    assert srv.fake.requests[-1].confirm == (action_id, True)
    event = next(f for f in frames if f["type"] == "action")
    final = frames[-1]
    assert event == {"v": 1, "type": "action", "seq": event["seq"], "id": action_id,
                     "kind": "cancel_order", "status": "executed", "summary": SUMMARY,
                     "reason": ""}
    assert event["seq"] == final["seq"] - 1, "the outcome is stored right before the reply's done"
    assert "action" not in final
    kinds = [kind for _, kind, _ in stored_seqs(srv.db, conv_id)]
    assert kinds[-2:] == ["action", "done"]

    # A resume replays the card (done.action) and the outcome.
    async with srv.client() as c:
        again = await c.hello(conversation_id=conv_id, resume_token=welcome["resume_token"],
                              last_seq=0)
    replayed = again["events"]
    assert any(e["type"] == "done" and e.get("action") == wire(action_id) for e in replayed)
    assert any(e["type"] == "action" and e["status"] == "executed" for e in replayed)


async def test_bad_action_ids_get_errors_and_change_nothing(srv: Running) -> None:
    async with srv.client() as c:
        await c.send(type="hello", store="demo")
        welcome = (await c.until("welcome"))[-1]
        # Nothing stored yet: any id is unknown.
        await c.send(type="confirm", action_id="act_nothing", accept=True)
        err = (await c.until("error"))[-1]
        assert (err["code"], err["ref"]) == ("unknown_action", "act_nothing")

        conv_id = welcome["conversation_id"]
        await c.ask("hello")
        other = add_proposal(srv, "c_someoneelse00000")
        other_store = add_proposal(srv, conv_id, store="locked")
        expired = add_proposal(srv, conv_id, minutes=-1)
        used = add_proposal(srv, conv_id, status="executed")
        cases = [("act_forged", "unknown_action"), (other, "unknown_action"),
                 (other_store, "unknown_action"), (expired, "action_expired"),
                 (used, "action_used")]
        requests = len(srv.fake.requests)
        for action_id, code in cases:
            await c.send(type="confirm", action_id=action_id, accept=True)
            err = (await c.until("error"))[-1]
            assert (err["code"], err["ref"]) == (code, action_id)
        await c.send(type="confirm", action_id=used, accept="yes")
        assert (await c.until("error"))[-1]["code"] == "bad_message"
    assert len(srv.fake.requests) == requests, "no reply was started"
    with srv.db.session() as session:
        texts = session.scalars(select(ChatMessage.text).where(ChatMessage.role == "shopper"))
        assert list(texts) == ["hello"], "no shopper message was stored"
        rows = session.execute(select(ActionProposal.public_id, ActionProposal.status))
        statuses = {public_id: status for public_id, status in rows}
    assert statuses[expired] == "proposed" and statuses[used] == "executed"


async def test_a_second_confirm_of_one_proposal_is_acked_not_answered(srv: Running) -> None:
    async with srv.client() as c:
        welcome = await c.hello()
        await c.ask("hello")
        action_id = add_proposal(srv, welcome["conversation_id"])
        srv.fake.queue(["Okay, I haven't changed anything."], pause_at=0,
                       action=outcome(action_id, "declined"))
        await c.send(type="confirm", action_id=action_id, accept=False)
        first = (await c.until("ack"))[-1]
        assert first["text"] == "Keep my order"
        await srv.fake.wait_paused()
        # The proposal is still open while the reply runs: the same id again is acked again.
        await c.send(type="confirm", action_id=action_id, accept=True)
        again = (await c.until("ack"))[-1]
        assert again == first
        srv.fake.release()
        await c.until(lambda f: f["type"] == "done" and f["in_reply_to"] == first["id"])
    assert [r.confirm for r in srv.fake.requests[1:]] == [(action_id, False)]


async def test_agent_rejection_tells_the_shopper(srv: Running) -> None:
    async with srv.client() as c:
        welcome = await c.hello()
        conv_id = welcome["conversation_id"]
        await c.ask("hello")
        action_id = add_proposal(srv, conv_id, status="awaiting_approval")
        with srv.db.session() as session:
            store_id = session.scalars(select(Store.id).where(Store.name == "demo")).one()
        queue = await srv.app.actions.queue(store_id)
        assert [row["id"] for row in queue["pending"]] == [action_id]
        assert queue["modes"]["cancel_order"] == "auto"
        result = await srv.app.actions.reject(store_id, action_id, "ana@shop.example",
                                              "Please call us about this order.")
        assert result.status == "declined"
        frames = await c.until("done")
    event = next(f for f in frames if f["type"] == "action")
    assert (event["status"], event["reason"]) == ("declined", "Please call us about this order.")
    assert "did not approve" in frames[-1]["text"]
    assert frames[-1]["in_reply_to"] is None
    assert (await srv.app.actions.queue(store_id))["pending"] == []
    conv = conversation_ref(srv.app, srv.db, conv_id)
    rows = await srv.app.actions.of_conversation(conv)
    assert [(r["id"], r["status"]) for r in rows] == [(action_id, "declined")]


async def test_a_confirm_while_an_agent_owns_the_conversation_is_refused(srv: Running) -> None:
    from chatbot.conversations.ownership import Action

    async with srv.client() as c:
        welcome = await c.hello()
        conv_id = welcome["conversation_id"]
        await c.ask("hello")
        action_id = add_proposal(srv, conv_id)
        conv = conversation_ref(srv.app, srv.db, conv_id)
        await srv.app.conversations.transition(conv, Action.TAKE_OVER, agent_id=None,
                                               agent_name="Ana")
        await c.send(type="confirm", action_id=action_id, accept=True)
        err = (await c.until("error"))[-1]
    assert (err["code"], err["ref"]) == ("not_allowed", action_id)
    with srv.db.session() as session:
        status = session.scalars(select(ActionProposal.status)
                                 .where(ActionProposal.public_id == action_id)).one()
    assert status == "proposed"


async def test_a_stopped_answer_still_stores_what_became_of_the_proposal(srv: Running) -> None:
    async with srv.client() as c:
        welcome = await c.hello()
        await c.ask("hello")
        action_id = add_proposal(srv, welcome["conversation_id"])
        # The answer streams one piece, then hangs; the action has been run meanwhile.
        srv.fake.queue(["Done. ", "Order #W5442520 is cancelled."], pause_at=1,
                       action=outcome(action_id))
        await c.send(type="confirm", action_id=action_id, accept=True)
        token = (await c.until("token"))[-1]
        await srv.fake.wait_paused()
        set_status(srv, action_id, "executed")
        await c.send(type="stop", reply_id=token["reply_id"])
        frames = await c.until("done")
        srv.fake.release()
    event = next(f for f in frames if f["type"] == "action")
    assert (event["id"], event["status"]) == (action_id, "executed")
    assert frames[-1]["interrupted"] is True and event["seq"] == frames[-1]["seq"] - 1


def action_events(srv: Running, conv_id: str, *, internal: bool | None = None) -> list[dict]:
    """The conversation's stored ``action`` events (payloads, with ``internal``)."""
    from chatbot.conversations.models import Conversation, ConversationEvent

    with srv.db.session() as session:
        cid = session.scalars(select(Conversation.id)
                              .where(Conversation.public_id == conv_id)).one()
        rows = session.scalars(select(ConversationEvent)
                               .where(ConversationEvent.conversation_id == cid,
                                      ConversationEvent.kind == "action")
                               .order_by(ConversationEvent.seq))
        return [{**r.payload, "seq": r.seq, "internal": r.internal} for r in rows
                if internal is None or r.internal == internal]


def status_of(srv: Running, action_id: str) -> str:
    with srv.db.session() as session:
        return session.scalars(select(ActionProposal.status)
                               .where(ActionProposal.public_id == action_id)).one()


async def test_an_unanswered_proposal_expires_with_one_action_event(srv: Running) -> None:
    async with srv.client() as c:
        welcome = await c.hello()
        conv_id = welcome["conversation_id"]
        await c.ask("hello")
        due = add_proposal(srv, conv_id, minutes=-1)
        fresh = add_proposal(srv, conv_id)
        alone = add_proposal(srv, "", minutes=-1)  # proposed outside a conversation (CLI)
        assert await srv.app.actions.expire_due() == 2
        event = (await c.until("action"))[-1]
        assert (event["id"], event["status"], event["reason"]) == (
            due, "expired", "The offer expired.")
        # The sweep runs in every process, again and again: nothing is told twice.
        assert await srv.app.actions.expire_due() == 0
        # A later reply tells nothing more either (the log already holds the outcome).
        frames = await c.ask("thanks")
    assert [f for f in frames if f["type"] == "action"] == []
    assert [(e["id"], e["status"]) for e in action_events(srv, conv_id)] == [(due, "expired")]
    assert (status_of(srv, due), status_of(srv, fresh), status_of(srv, alone)) == (
        "expired", "proposed", "expired")


async def test_a_proposal_the_shopper_moved_on_from_is_told_with_the_next_reply(
    srv: Running,
) -> None:
    async with srv.client() as c:
        welcome = await c.hello()
        conv_id = welcome["conversation_id"]
        await c.ask("hello")
        old = add_proposal(srv, conv_id)
        new = add_proposal(srv, conv_id)
        srv.fake.queue([SUMMARY], action=wire(old))
        await c.ask("please cancel #W5442520")
        # The shopper asks for something else: the pipeline declines the open proposal
        # (as ActionFlow does) and proposes the new request in the same reply.
        set_status(srv, old, "declined")
        srv.fake.queue(["Change the address ... Shall I go ahead?"], action=wire(new))
        frames = await c.ask("actually, change the address of #W5442520 instead")
    event = next(f for f in frames if f["type"] == "action")
    assert (event["id"], event["status"]) == (old, "declined")
    assert event["seq"] == frames[-1]["seq"] - 1 and frames[-1]["action"]["id"] == new
    assert [(e["id"], e["status"]) for e in action_events(srv, conv_id)] == [(old, "declined")]


async def test_an_outcome_is_stored_once_whoever_tells_it(srv: Running) -> None:
    async with srv.client() as c:
        welcome = await c.hello()
        conv_id = welcome["conversation_id"]
        await c.ask("hello")
        action_id = add_proposal(srv, conv_id)
        # The reply reports the outcome and the database has it too: one event.
        set_status(srv, action_id, "executed")
        srv.fake.queue(["Done."], action=outcome(action_id))
        await c.send(type="message", id="m_yes", text="yes")
        await c.until(lambda f: f["type"] == "done" and f["in_reply_to"] == "m_yes")
        # A yes in words to the used proposal answers with its state again: not stored.
        srv.fake.queue(["Done."], action=outcome(action_id))
        frames = await c.ask("yes")
    assert [f for f in frames if f["type"] == "action"] == []
    assert [e["status"] for e in action_events(srv, conv_id)] == ["executed"]


async def test_an_agents_own_preview_declined_is_told_to_agents_only(srv: Running) -> None:
    async with srv.client() as c:
        welcome = await c.hello()
        conv_id = welcome["conversation_id"]
        await c.ask("hello")
        action_id = add_proposal(srv, conv_id)
        with srv.db.transaction() as session:
            session.execute(update(ActionProposal).where(ActionProposal.public_id == action_id)
                            .values(proposed_by="agent"))
        conv = conversation_ref(srv.app, srv.db, conv_id)
        result = await srv.app.actions.answer(conv, action_id, False, "ana@shop.example")
        assert result.status == "declined"
        frames = await c.ask("are you there?")
    assert [f for f in frames if f["type"] == "action"] == []
    told = action_events(srv, conv_id)
    assert [(e["id"], e["status"], e["internal"]) for e in told] == [
        (action_id, "declined", True)]


async def test_a_decision_from_the_cli_reaches_the_conversation(srv: Running) -> None:
    from click.testing import CliRunner

    from chatbot.cli import cli

    async with srv.client() as c:
        welcome = await c.hello()
        conv_id = welcome["conversation_id"]
        await c.ask("hello")
        action_id = add_proposal(srv, conv_id, status="awaiting_approval")
        home = srv.app.settings.data_dir
        result = await asyncio.to_thread(CliRunner().invoke, cli, [
            "--data-dir", str(home), "--database-url", srv.db.url, "actions", "reject",
            action_id, "--store", "demo", "--agent", "ana@shop.example",
            "--reason", "Please call us."])
        assert result.exit_code == 0, result.output
        # Another process wrote it: a resume delivers it.
        async with srv.client() as again:
            back = await again.hello(conversation_id=conv_id,
                                     resume_token=welcome["resume_token"], last_seq=0)
    event = next(e for e in back["events"] if e["type"] == "action")
    assert (event["id"], event["status"], event["reason"]) == (
        action_id, "declined", "Please call us.")
    texts = [e["text"] for e in back["events"] if e["type"] == "done"]
    assert "Our team did not approve your request" in texts[-1]
