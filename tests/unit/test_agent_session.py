"""AgentSession without a socket: the console's rules and what live items become."""

from __future__ import annotations

import pytest

from chatbot.agents.authz import Principal
from chatbot.conversations.hub import HubItem, StoredEvent
from chatbot.conversations.log import ConversationRef
from chatbot.errors import AuthError, ChatbotError
from chatbot.protocol import agent as proto
from chatbot.session.agent import AgentSession, Phase

ANA = Principal(1, "ana@shop.example", "Ana", False, frozenset({1}))
BOSS = Principal(2, "boss@shop.example", "Boss", True, None)


def conv(state: str = "agent", store_id: int = 1) -> ConversationRef:
    return ConversationRef(7, "c_" + "A" * 16, store_id, None, state, 1, 0)


def signed_in(principal: Principal = ANA) -> AgentSession:
    session = AgentSession()
    session.signed_in("tok", principal)
    return session


def test_sign_in_and_the_errors_that_end_the_session() -> None:
    session = AgentSession()
    assert session.phase is Phase.AWAITING_AUTH
    session.signed_in("tok", ANA)
    assert session.phase is Phase.READY
    assert not session.ends_session(AuthError("nope", code="forbidden"))
    assert session.phase is Phase.READY
    assert session.ends_session(AuthError("expired", code="session_expired"))
    assert session.phase is Phase.CLOSED


def test_error_refs_name_the_message() -> None:
    assert AgentSession.error_ref(proto.Send("c_1", "m_7", "hi")) == ("m_7", "c_1")
    assert AgentSession.error_ref(proto.TakeOver("c_1")) == ("take_over", "c_1")
    assert AgentSession.error_ref(proto.ListAgents()) == ("list_agents", None)


def test_only_the_owner_or_an_admin_hands_back() -> None:
    signed_in().check_hand_back(conv(), owner_id=1)
    signed_in(BOSS).check_hand_back(conv(), owner_id=1)
    signed_in().check_hand_back(conv(state="waiting"), owner_id=None)  # nobody owns it
    with pytest.raises(AuthError) as err:
        signed_in().check_hand_back(conv(), owner_id=5)
    assert err.value.code == "forbidden"


def test_only_the_owner_replies_and_only_after_taking_over() -> None:
    signed_in().check_reply(conv(), owner_id=1)
    for state, owner in (("waiting", None), ("bot", None), ("agent", 5)):
        with pytest.raises(ChatbotError) as err:
            signed_in(BOSS if owner == 5 else ANA).check_reply(conv(state=state), owner)
        assert err.value.code == "not_allowed"
    assert signed_in().shows_typing(conv(), 1)
    assert not signed_in().shows_typing(conv(), 5)
    assert not signed_in().shows_typing(conv(state="waiting"), 1)


def test_nothing_is_allowed_before_sign_in() -> None:
    with pytest.raises(AuthError) as err:
        AgentSession().check_reply(conv(), owner_id=1)
    assert err.value.code == "unauthorized"


def test_forward_sends_each_stored_event_once_and_flags_notes() -> None:
    session = signed_in()
    session.open(conv(), high=3)
    old = HubItem(7, 1, stored=StoredEvent(7, 3, "ack", {"id": "m", "text": "hi", "at": "t"}))
    assert session.forward(old) is None
    note = HubItem(7, 1, stored=StoredEvent(7, 4, "note", {"text": "vip"}, internal=True))
    forward = session.forward(note)
    assert forward is not None and forward.event["internal"] is True and not forward.with_owner
    assert forward.event["v"] == 1 and forward.event["seq"] == 4
    status = {"kind": "agent_joined", "text": "", "agent": "Ana", "state": "agent"}
    joined = session.forward(HubItem(7, 1, stored=StoredEvent(7, 5, "status", status)))
    assert joined is not None and joined.with_owner
    typing = {"type": "status", "kind": "typing", "text": "", "agent": None, "state": None}
    assert session.forward(HubItem(7, 1, ephemeral=typing, audience="shopper")) is None
    shown = session.forward(HubItem(7, 1, ephemeral=typing, audience="agents"))
    assert shown is not None and shown.event["seq"] == 5 and shown.event["type"] == "status"


def test_inbox_rows_change_on_messages_and_status_not_tokens() -> None:
    def item(kind: str) -> HubItem:
        return HubItem(7, 1, stored=StoredEvent(7, 1, kind, {}))

    assert [AgentSession.changes_inbox_row(item(k)) for k in ("ack", "token", "done", "note")] == [
        True, False, True, True
    ]
    assert not AgentSession.changes_inbox_row(HubItem(7, 1, ephemeral={"type": "status"}))


def test_a_revoked_store_takes_the_inbox_and_the_open_conversation_away() -> None:
    session = signed_in()
    session.open(conv(store_id=1), high=9)
    assert session.revoked(ANA, inbox_store_id=1) == (False, None)
    no_store = Principal(1, "ana@shop.example", "Ana", False, frozenset())
    assert session.revoked(no_store, inbox_store_id=1) == (True, "c_" + "A" * 16)
    assert session.conv is None and session.delivered == 0
