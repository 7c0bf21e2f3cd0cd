"""/ws/agent and the console HTTP endpoints: login, cookies, and authorisation of every action."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect

from chatbot.agents import sessions
from chatbot.conversations.models import ConversationEvent
from tests.integration.agent_support import (
    PASSWORD,
    add_agent,
    agent_client,
    basic,
    http,
    http_from,
    quiet,
    token_for,
)
from tests.integration.server_support import conversation_ref, running_server, stored_seqs


async def test_login_sets_a_hardened_cookie_and_logout_ends_the_session(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"], name="Ana")

        status, headers, body = await asyncio.to_thread(
            http, running, "POST", "/console/login", basic("ANA@shop.example"))
        assert status == 200, body
        assert body["agent"] == {"id": 1, "email": "ana@shop.example", "name": "Ana",
                                 "admin": False}
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain http in this test
        token = cookie.split(";", 1)[0].split("=", 1)[1]
        assert len(token) >= 40 and token not in str(body)

        # Behind a TLS proxy the cookie is Secure.
        _, tls_headers, _ = await asyncio.to_thread(
            http, running, "POST", "/console/login",
            {**basic("ana@shop.example"), "X-Forwarded-Proto": "https"})
        assert "Secure" in tls_headers["Set-Cookie"]

        jar = {"Cookie": f"chatbot_console={token}"}
        status, _, body = await asyncio.to_thread(http, running, "GET", "/console/session", jar)
        assert status == 200 and body["agent"]["email"] == "ana@shop.example"

        status, headers, body = await asyncio.to_thread(
            http, running, "POST", "/console/logout", jar)
        assert status == 200 and body == {"logged_out": True}
        assert "Max-Age=0" in headers["Set-Cookie"]
        status, _, body = await asyncio.to_thread(http, running, "GET", "/console/session", jar)
        assert status == 401 and body["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 400, "bad_request"),
        ({"Authorization": "Basic !!!not-base64"}, 400, "bad_request"),
        (basic("ana@shop.example", "wrong password"), 401, "invalid_credentials"),
        (basic("nobody@shop.example"), 401, "invalid_credentials"),
    ],
)
async def test_bad_logins_are_refused(tmp_path: Path, headers: dict[str, str], status: int,
                                      code: str) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        got, res_headers, body = await asyncio.to_thread(
            http, running, "POST", "/console/login", headers)
        assert (got, body["error"]) == (status, code)
        assert "Set-Cookie" not in res_headers


async def test_login_attempts_are_rate_limited(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        codes = []
        for i in range(14):
            status, headers, _ = await asyncio.to_thread(
                http, running, "POST", "/console/login",
                basic("ana@shop.example", f"guess number {i}"))
            codes.append(status)
            if status == 429:
                assert 1 <= int(headers["Retry-After"]) <= 2
                break
        # Issue #18: per (account, address): 3 free failures, the 4th starts a backoff
        # (1 s, 2 s, 4 s ...), and the next immediate try waits.
        assert codes == [401] * 4 + [429]
        # From this address even the right password waits for the backoff ...
        status, _, _ = await asyncio.to_thread(
            http, running, "POST", "/console/login", basic("ana@shop.example", PASSWORD))
        assert status == 429
        # ... but the agent's own address is not locked out.
        status, _, _ = await asyncio.to_thread(
            http_from, "127.0.0.2", running, "POST", "/console/login",
            basic("ana@shop.example", PASSWORD))
        assert status == 200


async def test_no_session_is_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        # A first frame that is not `auth`: error, then the socket closes (1008).
        async with agent_client(running, ready=False) as client:
            await client.send(type="subscribe_inbox", store="demo")
            err = await client.error()
            assert err["code"] == "unauthorized"
            assert await client.closed_code() == 1008
        # A made-up token, by frame and by cookie.
        async with agent_client(running, "made-up-token", ready=False) as client:
            assert (await client.error())["code"] == "unauthorized"
            assert await client.closed_code() == 1008
        async with agent_client(running, cookie="made-up-token", ready=False) as client:
            assert (await client.error())["code"] == "unauthorized"


async def test_expired_session_is_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        token = token_for(running.db, "ana@shop.example", expired=True)
        async with agent_client(running, token, ready=False) as client:
            err = await client.error()
            assert err["code"] == "session_expired"
            assert await client.closed_code() == 1008


async def test_cookie_auth_and_cross_site_refusal(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        token = token_for(running.db, "ana@shop.example")
        same = f"http://127.0.0.1:{running.port}"
        async with agent_client(running, cookie=token, origin=same, ready=False) as client:
            ready = (await client.until("ready"))[-1]
            assert ready["agent"]["email"] == "ana@shop.example"
            assert [s["name"] for s in ready["stores"]] == ["demo"]
        async with agent_client(running, cookie=token, origin="https://evil.example",
                                ready=False) as client:
            assert (await client.error())["code"] == "forbidden"
            assert await client.closed_code() == 1008
        # The token is never accepted from the URL.
        async with connect(f"ws://127.0.0.1:{running.port}/ws/agent?token={token}") as ws:
            await ws.send('{"type":"subscribe_inbox","store":"demo"}')
            assert '"unauthorized"' in await asyncio.wait_for(ws.recv(), 5)


async def test_wrong_store_is_refused_for_every_action(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        token = token_for(running.db, "ana@shop.example")
        # A shopper of the other store ("locked") starts a conversation.
        async with running.client(origin="https://shop.example") as shopper:
            welcome = await shopper.hello("locked")
            await shopper.ask("hello there")
        cid = welcome["conversation_id"]

        async with agent_client(running, token) as client:
            await client.send(type="subscribe_inbox", store="locked")
            assert (await client.error())["code"] == "forbidden"
            # Issue #18: another store's conversation reads exactly like a missing one.
            await client.act("open", "c_does_not_exist")
            missing = await client.error()
            assert missing["code"] == "conversation_not_found"
            for kind, extra in [("open", {}), ("take_over", {}), ("resolve", {}),
                                ("note", {"id": "n1", "text": "peek"}),
                                ("send", {"id": "a1", "text": "hi"}), ("suggest", {}),
                                ("mark_read", {})]:
                await client.act(kind, cid, **extra)
                err = await client.error()
                assert (err["code"], err["conversation_id"]) == ("conversation_not_found",
                                                                 cid), kind
                assert err["message"] == missing["message"]
            # The socket is still usable for the agent's own store.
            await client.send(type="subscribe_inbox", store="demo")
            assert (await client.until("inbox"))[-1]["store"] == "demo"

        # Nothing was written: no note, no agent message, no ownership change.
        ref = conversation_ref(running.app, running.db, cid)
        assert ref.state == "bot" and ref.version == 0
        kinds = {kind for _, kind, _ in stored_seqs(running.db, cid)}
        assert kinds == {"ack", "token", "done"}
        with running.db.session() as session:
            assert session.scalar(select(func.count()).select_from(ConversationEvent).where(
                ConversationEvent.internal.is_(True))) == 0

        # An admin sees every store.
        add_agent(running.db, "boss@shop.example", [], admin=True)
        async with agent_client(running, token_for(running.db, "boss@shop.example")) as boss:
            opened = await boss.open(cid)
            assert opened["store"] == "locked"


async def test_logout_ends_a_live_console_connection(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        token = token_for(running.db, "ana@shop.example")
        async with agent_client(running, token) as client:
            await client.send(type="subscribe_inbox", store="demo")
            await client.until("inbox")
            with running.db.transaction() as session:
                assert sessions.logout(session, token)
            await client.send(type="subscribe_inbox", store="demo", filter="all")
            assert (await client.error())["code"] == "unauthorized"
            assert await client.closed_code() == 1008


async def test_revoked_store_stops_the_live_feed(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from chatbot.agents import accounts
    from chatbot.server import agent_socket

    monkeypatch.setattr(agent_socket, "SESSION_CHECK_S", 0.2)
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        async with running.client() as shopper, agent_client(
            running, token_for(running.db, "ana@shop.example")
        ) as client:
            cid = (await shopper.hello())["conversation_id"]
            await shopper.ask("hello")
            await client.send(type="subscribe_inbox", store="demo")
            await client.until("inbox")
            await client.open(cid)
            with running.db.transaction() as session:
                accounts.revoke_stores(session, "ana@shop.example", ["demo"])
            errors = [(await client.error()), (await client.error())]
            assert {(e["code"], e["ref"]) for e in errors} == {
                ("forbidden", "subscribe_inbox"), ("forbidden", "open")}
            await shopper.ask("are you there?")
            assert not [f for f in await quiet(client, 0.5)
                        if f["type"] in ("event", "inbox_update")]


async def test_admins_manage_the_team_over_the_socket(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "boss@shop.example", [], admin=True, name="Robin")
        add_agent(running.db, "ana@shop.example", ["demo"], name="Ana")
        ana_token = token_for(running.db, "ana@shop.example")
        async with agent_client(running, ana_token) as ana:
            for frame in ({"type": "list_agents"},
                          {"type": "remove_agent", "email": "boss@shop.example"}):
                await ana.send(**frame)
                assert (await ana.error())["code"] == "forbidden"

        async with agent_client(running, token_for(running.db, "boss@shop.example")) as boss:
            await boss.send(type="add_agent", email="Sam@Shop.example",
                            password="a long passphrase", stores=["demo"], name="Sam")
            team = (await boss.until("agents"))[-1]["agents"]
            assert [(a["email"], a["stores"]) for a in team] == [
                ("ana@shop.example", ["demo"]), ("boss@shop.example", []),
                ("sam@shop.example", ["demo"])]
            assert "password" not in str(team) and "hash" not in str(team)
            for bad, code in [({"email": "sam@shop.example", "password": "another passphrase"},
                               "agent_exists"),
                              ({"email": "x@shop.example", "password": "short",
                                "stores": ["demo"]}, "weak_password"),
                              ({"email": "z@shop.example", "password": "a long passphrase"},
                               "no_store"),
                              ({"email": "y@shop.example", "password": "a long passphrase",
                                "stores": ["nope"]}, "unknown_store")]:
                await boss.send(type="add_agent", **bad)
                assert (await boss.error())["code"] == code
            await boss.send(type="remove_agent", email="boss@shop.example")
            assert (await boss.error())["code"] == "not_allowed"

            # The new account works at once; store changes bite on the agent's next action.
            status, _, _ = await asyncio.to_thread(
                http, running, "POST", "/console/login", basic("sam@shop.example",
                                                              "a long passphrase"))
            assert status == 200
            await boss.send(type="set_agent_stores", email="ana@shop.example", stores=["locked"])
            team = (await boss.until("agents"))[-1]["agents"]
            assert team[0]["stores"] == ["locked"]
            async with agent_client(running, ana_token) as ana:
                await ana.send(type="subscribe_inbox", store="demo")
                assert (await ana.error())["code"] == "forbidden"
                # Removing an agent ends their live connection on their next frame.
                await boss.send(type="remove_agent", email="ana@shop.example")
                await boss.until("agents")
                await ana.send(type="subscribe_inbox", store="locked")
                assert (await ana.error())["code"] == "unauthorized"
                assert await ana.closed_code() == 1008


async def test_inbox_refreshes_with_writes_from_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatbot.conversations.hub import ConversationHub
    from chatbot.conversations.service import ConversationService
    from chatbot.server import agent_socket

    monkeypatch.setattr(agent_socket, "INBOX_REFRESH_S", 0.3)
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        # Pretend several processes share the database (the event poller is on).
        monkeypatch.setattr(running.app, "poller", object(), raising=False)
        async with agent_client(running, token_for(running.db, "ana@shop.example")) as ana:
            await ana.send(type="subscribe_inbox", store="demo")
            assert (await ana.until("inbox"))[-1]["conversations"] == []
            # Another process (its own hub) stores a conversation: no hub item reaches us.
            other = ConversationService(running.db, ConversationHub())
            with running.db.session() as session:
                demo_id = _store_id(session, "demo")
            conv, _ = await other.open(demo_id, None)
            await other.add_shopper_message(conv, "m1", "written elsewhere")
            snapshot = (await ana.until(lambda f: f["type"] == "inbox"
                                        and f["conversations"], timeout=5))[-1]
            assert snapshot["conversations"][0]["last_message"]["text"] == "written elsewhere"


def _store_id(session: Any, name: str) -> int:
    from knowledge_base.stores import get_store

    return get_store(session, name).id
