"""AgentSession without a socket: literal frames in, effects out, results scripted.

Each test plays the console pump's part with :class:`World`: it answers the session's
requests from a small scripted world (one agent, two stores, one conversation) and records
every effect, so sign-in, authorisation, ownership, replies, the inbox, the copilot, the
approval queue and the errors are checked without a server, a database or an event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from chatbot.agents.authz import Principal
from chatbot.conversations.hub import HubItem, StoredEvent
from chatbot.conversations.log import ConversationRef
from chatbot.conversations.ownership import Action
from chatbot.errors import AuthError, ChatbotError, ConflictError, NotFoundError
from chatbot.protocol import agent as proto
from chatbot.server.pump import drive
from chatbot.session import agent_effects as ax
from chatbot.session.agent import AgentSession, InboxView, Phase

ANA = Principal(1, "ana@shop.example", "Ana", False, frozenset({1}))
BOSS = Principal(2, "boss@shop.example", "Boss", True, None)
CONV_ID = "c_" + "A" * 16
OTHER_ID = "c_" + "B" * 16
STORES = {"demo": (1, "demo"), "other": (2, "other")}


def conv(state: str = "agent", store_id: int = 1, public_id: str = CONV_ID) -> ConversationRef:
    return ConversationRef(7 if store_id == 1 else 8, public_id, store_id, None, state, 1, 0)


@dataclass
class World:
    """Scripted answers to the session's requests; every effect is recorded."""

    principal: Principal = ANA
    dead: str | None = None  # set: the session ended with this code
    convs: dict[str, ConversationRef] = field(
        default_factory=lambda: {CONV_ID: conv(), OTHER_ID: conv(store_id=2, public_id=OTHER_ID)}
    )
    owner_id: int | None = 1
    frames_allowed: bool = True
    transcript: tuple[list[StoredEvent], int] = ([], 0)
    raises: dict[type, Exception] = field(default_factory=dict)
    effects: list[Any] = field(default_factory=list)

    def _authorize(self, store_id: int | None) -> Principal:
        if self.dead is not None:
            raise AuthError("your session ended", code=self.dead)
        if store_id is not None and not self.principal.can_access(store_id):
            raise AuthError("you do not have access to this store", code="forbidden")
        return self.principal

    def _conversation(self, public_id: str) -> ConversationRef:
        if public_id not in self.convs:
            raise NotFoundError("no such conversation", code="conversation_not_found")
        return self.convs[public_id]

    def answer(self, effect: Any) -> Any:
        if type(effect) in self.raises:
            raise self.raises.pop(type(effect))
        answers: dict[type, Callable[[Any], Any]] = {
            ax.FrameAllowed: lambda e: self.frames_allowed,
            ax.SignIn: lambda e: (self._authorize(None), [{"name": "demo", "key": "k",
                                                           "title": "Demo"}]),
            ax.Authorize: lambda e: self._authorize(e.store_id),
            ax.LookupStore: lambda e: STORES.get(e.key),
            ax.LookupConversation: lambda e: self._conversation(e.public_id),
            ax.OwnerId: lambda e: self.owner_id,
            ax.Owner: lambda e: {"id": self.owner_id, "name": "Ana"},
            ax.InboxSnapshot: lambda e: ([{"conversation_id": CONV_ID}], {"open": 1}),
            ax.InboxUpdates: lambda e: ([({"conversation_id": i}, True) for i in e.ids],
                                        {"open": 1}),
            ax.Transcript: lambda e: self.transcript,
            ax.Details: lambda e: {"store": "demo", "customer": {"verified": False},
                                   "owner": None, "summary": None},
            ax.Fresh: lambda e: e.conv,
            ax.ApplyTeam: lambda e: [{"email": "ana@shop.example"}],
            ax.ActionQueue: lambda e: {"pending": [{"id": "a_1"}], "modes": {"cancel": "auto"}},
            ax.Propose: lambda e: {"id": "a_2", "status": "proposed", "kind": e.kind},
            ax.AnswerProposal: lambda e: {"id": e.action_id, "status": "executed",
                                          "details": {}},
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


def frames(effects: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(e.frame) for e in effects if isinstance(e, ax.Send)]


def kinds(effects: list[Any]) -> list[str]:
    return [type(e).__name__ for e in effects]


def send(sess: AgentSession, world: World, **fields: Any) -> list[Any]:
    return world.run(sess.receive_frame(json.dumps({"v": 1, **fields})))


def ready(principal: Principal = ANA, **world: Any) -> tuple[AgentSession, World]:
    sess, w = AgentSession(), World(principal=principal, **world)
    w.run(sess.start(None))
    (frame,) = frames(send(sess, w, type="auth", token="tok"))
    assert frame["type"] == "ready"
    return sess, w


def errors(effects: list[Any]) -> list[tuple[str, str | None, str | None]]:
    return [(f["code"], f["ref"], f["conversation_id"]) for f in frames(effects)
            if f["type"] == "error"]


# ---- signing in ---------------------------------------------------------------------------


def test_a_cookie_from_the_console_page_signs_in_at_once() -> None:
    sess, world = AgentSession(origin="https://shop.example", host="SHOP.example"), World()
    out = world.run(sess.start("tok"))
    assert out[0] == ax.SignIn("tok")
    (ready_frame,) = frames(out)
    assert ready_frame["agent"] == {"id": 1, "email": "ana@shop.example", "name": "Ana",
                                    "admin": False}
    assert ready_frame["stores"] == [{"name": "demo", "key": "k", "title": "Demo"}]
    assert sess.phase is Phase.READY and sess.token == "tok"


def test_a_cookie_sent_by_another_site_is_refused_before_any_lookup() -> None:
    sess, world = AgentSession(origin="https://evil.example", host="shop.example"), World()
    out = world.run(sess.start("tok"))
    assert kinds(out) == ["Send", "Close"]
    assert errors(out) == [("forbidden", None, None)]
    assert out[-1] == ax.Close(1008, "forbidden")
    assert sess.phase is Phase.CLOSED


def test_without_a_cookie_only_an_auth_frame_is_accepted() -> None:
    sess, world = AgentSession(), World()
    assert world.run(sess.start(None)) == []
    assert errors(send(sess, world, type="nope")) == [("unknown_type", None, None)]
    assert sess.phase is Phase.AWAITING_AUTH  # a bad frame is answered; still waiting
    out = send(sess, world, type="subscribe_inbox", store="demo")
    assert errors(out) == [("unauthorized", None, None)] and out[-1] == ax.Close(1008,
                                                                                  "unauthorized")
    assert sess.phase is Phase.CLOSED
    assert send(sess, world, type="auth", token="tok") == []  # a closed session ignores frames


def test_no_auth_in_time_and_a_dead_token_close_the_socket() -> None:
    sess, world = AgentSession(), World()
    out = world.run(sess.auth_timeout())
    assert errors(out) == [("unauthorized", None, None)] and sess.phase is Phase.CLOSED
    sess, world = AgentSession(), World(dead="session_expired")
    out = send(sess, world, type="auth", token="old")
    assert errors(out) == [("session_expired", None, None)]
    assert out[-1] == ax.Close(1008, "session_expired") and sess.phase is Phase.CLOSED


def test_auth_twice_and_too_many_frames_are_errors_that_keep_the_session() -> None:
    sess, world = ready()
    assert errors(send(sess, world, type="auth", token="tok")) == [("already_started", None, None)]
    world.frames_allowed = False
    out = send(sess, world, type="list_agents")
    assert kinds(out) == ["FrameAllowed", "Send"]
    assert errors(out) == [("rate_limited", None, None)]
    assert sess.phase is Phase.READY


# ---- the inbox ----------------------------------------------------------------------------


def test_subscribe_follows_then_reads_then_pumps() -> None:
    sess, world = ready()
    out = send(sess, world, type="subscribe_inbox", store="demo", filter="waiting", q="mia")
    assert kinds(out) == ["FrameAllowed", "LookupStore", "Authorize", "StopInbox", "FollowInbox",
                          "InboxSnapshot", "Send", "StartInboxPump"]
    assert ax.InboxSnapshot(1, 1, "waiting", "mia") in out
    (inbox,) = frames(out)
    assert (inbox["type"], inbox["store"], inbox["filter"], inbox["q"]) == (
        "inbox", "demo", "waiting", "mia")
    assert sess.inbox == InboxView(1, "demo", "waiting", "mia")


@pytest.mark.parametrize(("store", "code"), [("nowhere", "unknown_store"), ("other", "forbidden")])
def test_an_unknown_or_foreign_store_is_an_error_and_nothing_is_followed(
    store: str, code: str
) -> None:
    sess, world = ready()
    out = send(sess, world, type="subscribe_inbox", store=store)
    assert errors(out) == [(code, "subscribe_inbox", None)]
    assert "FollowInbox" not in kinds(out) and sess.inbox is None


def test_inbox_rows_are_queued_on_messages_and_flushed_together() -> None:
    sess, world = ready()
    send(sess, world, type="subscribe_inbox", store="demo")

    def item(kind: str, conversation_id: int = 7, store_id: int = 1) -> HubItem:
        return HubItem(conversation_id, store_id, stored=StoredEvent(conversation_id, 1, kind, {}))

    assert sess.inbox_item(item("token")) == []  # the preview changes on done, not per token
    assert sess.inbox_item(item("ack", 9)) == [ax.FlushRows()]
    assert sess.inbox_item(item("done", 7)) == [ax.FlushRows()]
    assert sess.inbox_item(HubItem(7, 1, ephemeral={"type": "status"})) == []
    out = world.run(sess.flush_rows())
    assert out[0] == ax.InboxUpdates(1, [7, 9], 1, "open", "")
    assert [(f["type"], f["conversation"]["conversation_id"]) for f in frames(out)] == [
        ("inbox_update", 7), ("inbox_update", 9)]
    assert sess.pending == set()


def test_an_action_event_refreshes_the_approval_queue_of_that_store_only() -> None:
    sess, world = ready()
    action = HubItem(7, 1, stored=StoredEvent(7, 3, "action", {"id": "a_1"}))
    assert sess.inbox_item(action) == []  # no queue shown yet
    send(sess, world, type="list_actions", store="demo")
    assert sess.inbox_item(action) == [ax.FlushActions()]
    assert sess.inbox_item(replace(action, store_id=2)) == []


def test_an_inbox_that_fell_behind_subscribes_again_with_the_same_filter() -> None:
    sess, world = ready()
    send(sess, world, type="subscribe_inbox", store="demo", filter="mine", q="x")
    out = world.run(sess.inbox_fell_behind())
    assert ax.InboxSnapshot(1, 1, "mine", "x") in out and out[-1] == ax.StartInboxPump()


# ---- the open conversation ----------------------------------------------------------------


def test_open_follows_reads_the_transcript_and_flags_notes() -> None:
    events = [StoredEvent(7, 1, "ack", {"id": "m1", "text": "hi", "at": "t"}),
              StoredEvent(7, 2, "note", {"text": "vip", "agent": "Ana", "at": "t"},
                          internal=True)]
    sess, world = ready(transcript=(events, 2))
    out = send(sess, world, type="open", conversation_id=CONV_ID)
    assert kinds(out) == ["FrameAllowed", "LookupConversation", "Authorize", "StopConversation",
                          "FollowConversation", "Transcript", "Details", "Fresh", "Send",
                          "StartConversationPump"]
    (frame,) = frames(out)
    assert frame["type"] == "conversation" and frame["seq"] == 2 and frame["state"] == "agent"
    assert [e.get("internal", False) for e in frame["events"]] == [False, True]
    assert sess.conv == conv() and sess.delivered == 2

    # Live items: each stored event once; an ownership change carries the owner.
    old = HubItem(7, 1, stored=StoredEvent(7, 2, "note", {"text": "vip"}, internal=True))
    assert world.run(sess.conversation_item(old)) == []
    status = {"kind": "agent_joined", "text": "", "agent": "Ana", "state": "agent"}
    out = world.run(sess.conversation_item(HubItem(7, 1, stored=StoredEvent(7, 3, "status",
                                                                            status))))
    assert out[0] == ax.Owner(7)
    (event,) = frames(out)
    assert event["event"]["seq"] == 3 and event["owner"] == {"id": 1, "name": "Ana"}
    typing = {"type": "status", "kind": "typing", "text": "", "agent": None, "state": None}
    assert world.run(sess.conversation_item(HubItem(7, 1, ephemeral=typing,
                                                    audience="shopper"))) == []

    out = send(sess, world, type="close", conversation_id=CONV_ID)
    assert ax.StopConversation() in out and sess.conv is None


def test_another_stores_conversation_reads_like_one_that_does_not_exist() -> None:
    sess, world = ready()
    for conversation_id in (OTHER_ID, "c_" + "Z" * 16):
        out = send(sess, world, type="open", conversation_id=conversation_id)
        assert errors(out) == [("conversation_not_found", "open", conversation_id)]
        assert "FollowConversation" not in kinds(out)


def test_forward_sends_each_stored_event_once_and_flags_notes() -> None:
    sess, _ = ready()
    sess.open(conv(), high=3)
    old = HubItem(7, 1, stored=StoredEvent(7, 3, "ack", {"id": "m", "text": "hi", "at": "t"}))
    assert sess.forward(old) is None
    note = HubItem(7, 1, stored=StoredEvent(7, 4, "note", {"text": "vip"}, internal=True))
    forward = sess.forward(note)
    assert forward is not None and forward.event["internal"] is True and not forward.with_owner
    assert forward.event["v"] == 1 and forward.event["seq"] == 4
    typing = {"type": "status", "kind": "typing", "text": "", "agent": None, "state": None}
    shown = sess.forward(HubItem(7, 1, ephemeral=typing, audience="agents"))
    assert shown is not None and shown.event["seq"] == 4 and shown.event["type"] == "status"


# ---- ownership, replies, notes, typing ----------------------------------------------------


def test_take_over_transitions_as_the_agent_and_stops_the_bot() -> None:
    sess, world = ready()
    out = send(sess, world, type="take_over", conversation_id=CONV_ID)
    assert out[-2:] == [ax.AgentTransition(conv(), Action.TAKE_OVER, 1, "Ana"),
                        ax.StopReply(conv(), "takeover")]
    for kind, action in (("resolve", Action.RESOLVE), ("reopen", Action.REOPEN)):
        out = send(sess, world, type=kind, conversation_id=CONV_ID)
        assert out[-1] == ax.AgentTransition(conv(), action, 1, "Ana")


def test_only_the_owner_or_an_admin_hands_back() -> None:
    sess, world = ready(owner_id=5)
    out = send(sess, world, type="hand_back", conversation_id=CONV_ID)
    assert errors(out) == [("forbidden", "hand_back", CONV_ID)]
    assert "AgentTransition" not in kinds(out) and sess.phase is Phase.READY
    sess, world = ready(BOSS, owner_id=5)
    out = send(sess, world, type="hand_back", conversation_id=CONV_ID)
    assert out[-1] == ax.AgentTransition(conv(), Action.HAND_BACK, 2, "Boss")
    # Nobody owns a waiting conversation: any agent of the store may hand it back.
    sess, world = ready(owner_id=None, convs={CONV_ID: conv(state="waiting")})
    out = send(sess, world, type="hand_back", conversation_id=CONV_ID)
    assert "OwnerId" not in kinds(out) and kinds(out)[-1] == "AgentTransition"


def test_a_lost_race_for_the_conversation_is_an_error_naming_it() -> None:
    sess, world = ready()
    world.raises[ax.AgentTransition] = ConflictError("someone else took it", code="conflict")
    out = send(sess, world, type="take_over", conversation_id=CONV_ID)
    assert errors(out) == [("conflict", "take_over", CONV_ID)]
    assert "StopReply" not in kinds(out)


def test_only_the_owner_replies_and_the_error_names_the_message() -> None:
    sess, world = ready()
    out = send(sess, world, type="send", conversation_id=CONV_ID, id="m_7", text="On it")
    assert out[-1] == ax.AgentMessage(conv(), "On it", 1, "Ana")
    for owner, state in ((5, "agent"), (1, "waiting")):
        sess, world = ready(owner_id=owner, convs={CONV_ID: conv(state=state)})
        out = send(sess, world, type="send", conversation_id=CONV_ID, id="m_8", text="hi")
        assert errors(out) == [("not_allowed", "m_8", CONV_ID)]
        assert "AgentMessage" not in kinds(out)


def test_notes_are_internal_and_typing_is_published_for_the_owner_only() -> None:
    sess, world = ready(owner_id=5)
    out = send(sess, world, type="note", conversation_id=CONV_ID, id="n_1", text="vip")
    assert out[-1] == ax.AgentMessage(conv(), "vip", 1, "Ana", internal=True)
    out = send(sess, world, type="typing", conversation_id=CONV_ID, active=True)
    assert "Publish" not in kinds(out) and frames(out) == []  # not the owner: nothing
    sess, world = ready()
    out = send(sess, world, type="typing", conversation_id=CONV_ID, active=False)
    publish = out[-1]
    assert isinstance(publish, ax.Publish)
    assert (publish.event.kind, publish.event.agent, publish.event.state) == (
        "idle", "Ana", "agent")


def test_mark_read_queues_the_row_again() -> None:
    sess, world = ready()
    send(sess, world, type="subscribe_inbox", store="demo")
    out = send(sess, world, type="mark_read", conversation_id=CONV_ID)
    assert out[-2:] == [ax.MarkRead(1, 7), ax.FlushRows()] and sess.pending == {7}


# ---- the copilot --------------------------------------------------------------------------


def test_suggest_starts_a_suggestion_only_for_a_conversation_the_agent_may_see() -> None:
    sess, world = ready()
    out = send(sess, world, type="suggest", conversation_id=CONV_ID)
    assert out[-1] == ax.StartSuggestion(conv())
    out = send(sess, world, type="suggest", conversation_id=OTHER_ID)
    assert "StartSuggestion" not in kinds(out)
    assert errors(out) == [("conversation_not_found", "suggest", OTHER_ID)]


def test_a_failed_suggestion_is_an_error_about_suggest() -> None:
    sess, _ = ready()
    loading = ChatbotError("the copilot is still loading", code="not_ready")
    assert errors(sess.suggestion_failed(conv(), loading)) == [("not_ready", "suggest", CONV_ID)]
    crashed = errors(sess.suggestion_failed(conv(), RuntimeError("boom")))
    assert crashed == [("answer_failed", "suggest", CONV_ID)]


# ---- order actions: the approval queue and an agent's own actions ------------------------


def test_any_agent_of_the_store_sees_approves_and_rejects() -> None:
    sess, world = ready()
    (queue,) = frames(send(sess, world, type="list_actions", store="demo"))
    assert queue["type"] == "actions" and queue["pending"] == [{"id": "a_1"}]
    assert queue["can_configure"] is False and sess.actions_store == (1, "demo")
    out = send(sess, world, type="approve_action", store="demo", action_id="a_1")
    assert ax.Approve(1, "a_1", "ana@shop.example") in out and frames(out)[0]["type"] == "actions"
    out = send(sess, world, type="reject_action", store="demo", action_id="a_1", reason="no")
    assert ax.Reject(1, "a_1", "ana@shop.example", "no") in out
    out = send(sess, world, type="approve_action", store="other", action_id="a_9")
    assert errors(out) == [("forbidden", "approve_action", None)]
    assert "Approve" not in kinds(out)


def test_only_admins_change_the_action_modes() -> None:
    sess, world = ready()
    out = send(sess, world, type="set_action_modes", store="demo", modes={"cancel": "off"})
    assert errors(out) == [("forbidden", "set_action_modes", None)]
    assert "SetModes" not in kinds(out) and sess.phase is Phase.READY
    sess, world = ready(BOSS)
    out = send(sess, world, type="set_action_modes", store="demo", modes={"cancel": "off"})
    assert ax.SetModes(1, {"cancel": "off"}, "boss@shop.example") in out
    assert frames(out)[-1]["can_configure"] is True


def test_an_agents_own_action_is_previewed_then_answered() -> None:
    sess, world = ready()
    out = send(sess, world, type="propose_action", conversation_id=CONV_ID, kind="cancel",
               params={"order": "#W1"})
    assert ax.Propose(conv(), "cancel", {"order": "#W1"}, "ana@shop.example") in out
    (preview,) = frames(out)
    assert preview["type"] == "action_preview" and preview["action"]["status"] == "proposed"
    out = send(sess, world, type="confirm_action", conversation_id=CONV_ID, action_id="a_2",
               accept=True)
    assert frames(out)[0]["action"] == {"id": "a_2", "status": "executed", "details": {}}


# ---- the team -----------------------------------------------------------------------------


def test_a_team_change_makes_every_other_console_check_its_session() -> None:
    sess, world = ready(BOSS)
    out = send(sess, world, type="list_agents")
    assert frames(out)[0]["type"] == "agents" and "RecheckPeers" not in kinds(out)
    out = send(sess, world, type="remove_agent", email="ana@shop.example")
    assert out[-1] == ax.RecheckPeers()
    world.raises[ax.ApplyTeam] = AuthError("only admins manage the team", code="forbidden")
    assert errors(send(sess, world, type="list_agents")) == [("forbidden", "list_agents", None)]


# ---- sessions that end, stores that are revoked, failures --------------------------------


def test_an_ended_session_closes_the_socket_on_the_next_action() -> None:
    sess, world = ready()
    world.dead = "unauthorized"
    out = send(sess, world, type="take_over", conversation_id=CONV_ID)
    assert errors(out) == [("unauthorized", None, None)]
    assert out[-1] == ax.Close(1008, "unauthorized") and sess.phase is Phase.CLOSED


def test_a_revoked_store_takes_the_inbox_and_the_open_conversation_away() -> None:
    sess, world = ready()
    send(sess, world, type="subscribe_inbox", store="demo")
    send(sess, world, type="open", conversation_id=CONV_ID)
    assert [e for e in world.run(sess.check_session()) if not isinstance(e, ax.Authorize)] == []
    world.principal = replace(ANA, store_ids=frozenset())
    out = world.run(sess.check_session())
    assert kinds(out) == ["Authorize", "StopInbox", "Send", "StopConversation", "Send"]
    assert errors(out) == [("forbidden", "subscribe_inbox", None), ("forbidden", "open", CONV_ID)]
    assert sess.inbox is None and sess.conv is None and sess.phase is Phase.READY
    world.dead = "session_expired"
    out = world.run(sess.check_session())
    assert errors(out) == [("session_expired", None, None)] and sess.phase is Phase.CLOSED


def test_an_unexpected_failure_is_an_internal_error_and_the_session_goes_on() -> None:
    sess, world = ready()
    world.raises[ax.MarkRead] = RuntimeError("database on fire")
    out = send(sess, world, type="mark_read", conversation_id=CONV_ID)
    assert errors(out) == [("internal_error", "mark_read", None)]
    assert sess.phase is Phase.READY


def test_error_refs_name_the_message() -> None:
    assert AgentSession.error_ref(proto.Send("c_1", "m_7", "hi")) == ("m_7", "c_1")
    assert AgentSession.error_ref(proto.TakeOver("c_1")) == ("take_over", "c_1")
    assert AgentSession.error_ref(proto.ListAgents()) == ("list_agents", None)
