"""Issue #18: each finding of the outside red team, reproduced against a real server (real
websockets, real SQLite, real argon2), and what holds now.

1. guest verification brute force        -> test_guest_brute_force_gets_five_guesses_and_no_facts
2. a login flood stalls the chat          -> test_login_flood_never_touches_the_database_thread
3. handoff frames bypass the limits       -> test_handoff_flood_*, test_every_frame_*
4. agent lockout as denial of service     -> test_failed_logins_elsewhere_never_lock_the_agent_out
5. secrets readable, secrets in logs      -> test_serve_files_are_private_and_logs_hold_no_secrets
6. logout CSRF                            -> test_logout_is_post_only_and_same_origin
7. a logged-out socket keeps streaming    -> test_logout_and_removal_close_sockets_at_once
8. 1011s, forbidden vs not found, metrics -> test_huge_last_seq_*, test_duplicate_host_*,
   test_metrics_token, test_agent_socket_auth.py::test_wrong_store_is_refused_for_every_action
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import stat
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from chatbot import identity
from chatbot.answering import replies as fixed_replies
from chatbot.answering.pipeline import Pipeline
from chatbot.conversations.models import Conversation
from chatbot.security import counters
from chatbot.security import guest_verification as gv
from chatbot.security import login as login_security
from chatbot.server import agent_socket
from chatbot.settings import Limits, Settings
from knowledge_base.models import Customer, Order, OrderItem, Shipment, Store
from tests.integration.agent_support import (
    PASSWORD,
    add_agent,
    agent_client,
    basic,
    http,
    http_from,
    token_for,
)
from tests.integration.server_support import Running, chat_client, running_server
from tests.unit.answering_support import FakeEngine

VICTIM = "victim@example.com"
TRACKING = "1Z999AA10123456784"
ITEM = "Secret Lantern"


# ---- helpers -------------------------------------------------------------------------------


def client_from(running: Running, ip: str, **kw: Any) -> Any:
    """A shopper socket from another loopback source address."""
    return chat_client(running.url, local_addr=(ip, 0), **kw)


async def raw_login(port: int, ip: str, email: str, password: str,
                    headers: dict[str, str] | None = None) -> int:
    """One POST /console/login from ``ip``; the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0))
    auth = base64.b64encode(f"{email}:{password}".encode()).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(
        f"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Basic {auth}\r\nContent-Length: 0\r\n{extra}\r\n".encode()
    )
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    return int(line.split()[1])


def seed_victim(running: Running) -> None:
    """400 sequential demo-style orders; the victim owns #NW10123 and #NW10300."""
    with running.db.transaction() as session:
        store = session.scalars(select(Store).where(Store.name == "demo")).one()
        victim = Customer(store_id=store.id, source_id="victim", email=VICTIM,
                          first_name="Vic", address={"line1": "12 Secret Lane"},
                          payment_methods=[])
        session.add(victim)
        for n in range(10001, 10401):
            mine = n in (10123, 10300)
            order = Order(store_id=store.id, customer=victim if mine else None,
                          number=f"#NW{n}", status="shipped", currency="USD",
                          email=VICTIM if mine else f"shopper{n}@example.com",
                          total=Decimal("42.00"))
            if mine:
                order.shipments.append(Shipment(carrier="UPS", tracking_number=TRACKING,
                                                status="in_transit"))
                order.items.append(OrderItem(name=ITEM, options={}, unit_price=Decimal("42.00"),
                                             quantity=1))
            session.add(order)


def use_pipeline(running: Running, tmp_path: Path) -> None:
    """The real answering pipeline (guest verification and order SQL), with an engine that
    repeats its first fact line, so any order fact that reaches the prompt shows."""
    settings = Settings.from_env({}, data_dir=tmp_path, adapter_path="none")
    running.app.set_answerer(Pipeline(running.db, None, FakeEngine(), settings))


# ---- 1. guest verification brute force ----------------------------------------------------


async def test_guest_brute_force_gets_five_guesses_and_no_facts(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        seed_victim(running)
        use_pipeline(running, tmp_path)
        before = {o: counters.GUEST_VERIFICATION.get(o) for o in ("verified", "failed", "refused")}

        # Control: the right number and email do return the order's facts (the oracle the
        # red team used), and a success costs the owner nothing.
        async with client_from(running, "127.0.0.9") as owner:
            await owner.hello()
            frames = await owner.ask(f"status of order #NW10300 email {VICTIM}")
            assert TRACKING in frames[-1]["text"] or ITEM in frames[-1]["text"]

        # The red team's run: 360 guesses from 6 addresses x 3 sockets, as fast as allowed.
        texts: list[str] = []
        errors: list[str] = []

        async def attacker(index: int, ip: str) -> None:
            async with client_from(running, ip) as client:
                await client.hello()
                for k in range(20):
                    n = 10001 + index + 18 * k
                    frames = await client.ask(f"status of order #NW{n} email {VICTIM}")
                    texts.append(frames[-1]["text"])
                    errors.extend(f["code"] for f in frames if f["type"] == "error")

        started = time.monotonic()
        await asyncio.gather(*(attacker(c, f"127.0.0.{20 + c // 3}") for c in range(18)))
        elapsed = time.monotonic() - started

        assert len(texts) == 360  # every guess was answered (no rate_limited needed)
        checked = [t for t in texts if t == fixed_replies.VERIFY_FAILED]
        refused = [t for t in texts if t == gv.LOCKED_REPLY]
        assert len(checked) <= 5, f"{len(checked)} guesses reached the order lookup"
        assert len(checked) + len(refused) == 360
        # #NW10123 (the victim's) was among the guesses and gave nothing away.
        assert not any(TRACKING in t or ITEM in t or "Secret Lane" in t for t in texts)
        after = {o: counters.GUEST_VERIFICATION.get(o) for o in before}
        assert after["verified"] - before["verified"] == 1  # the control only
        assert after["failed"] - before["failed"] == len(checked)
        assert after["refused"] - before["refused"] == len(refused)
        metrics = await asyncio.to_thread(_get, running.port, "/metrics")
        assert 'chatbot_guest_verifications_total{outcome="failed"}' in metrics
        print(f"\n360 guesses in {elapsed:.1f}s: {len(checked)} checked, {len(refused)} refused")


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> str:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as res:
        return str(res.read().decode())


# ---- 2. a login flood and the chat -----------------------------------------------------------


async def test_login_flood_never_touches_the_database_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    running_now = [0, 0]  # current, peak
    lock = threading.Lock()
    real = login_security.verify_password

    def spy(stored_hash: str | None, password: str) -> bool:
        with lock:
            threads.append(threading.current_thread().name)
            running_now[0] += 1
            running_now[1] = max(running_now[1], running_now[0])
        try:
            return real(stored_hash, password)  # the real argon2id check
        finally:
            with lock:
                running_now[0] -= 1

    monkeypatch.setattr(login_security, "verify_password", spy)
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        # The pacing (4 checks a second by default) is tested below; here the flood runs
        # at argon2's own speed, the harder case for the chat.
        agent_socket_checks(running).max_per_second = 0
        statuses: list[int] = []

        async def flood(ip: str) -> None:
            for i in range(20):
                statuses.append(await raw_login(running.port, ip, f"nobody{i}@{ip}.example",
                                                "not the password"))

        async def shopper() -> tuple[float, float, float]:
            async with running.client() as client:
                t0 = time.monotonic()
                await client.hello()
                t1 = time.monotonic()
                await client.send(type="message", id="m_1", text="hello")
                await client.until("ack")
                t2 = time.monotonic()
                await client.until("token")
                return t1 - t0, t2 - t1, time.monotonic() - t2

        floods = [asyncio.create_task(flood(f"127.0.1.{i + 1}")) for i in range(20)]
        await asyncio.sleep(0.3)
        welcome, ack, token = await shopper()
        await asyncio.gather(*floods)

        assert len(statuses) == 400 and set(statuses) <= {401, 503}
        assert statuses.count(401) >= 1  # real checks ran meanwhile
        # Password checks ran only in the bounded argon2 pool, never on the database thread.
        assert threads and all(n.startswith("chatbot-argon2") for n in threads), set(threads)
        checks = agent_socket_checks(running)
        assert running_now[1] <= checks.max_concurrent
        assert checks.peak <= checks.max_concurrent + checks.max_waiting
        # Before: 1.68 / 5.68 / 3.65 s. The benchmark (bench/login_flood.py) holds the 1.5x
        # target; here a loose bound that a busy CI machine still meets.
        assert welcome < 1.0 and ack < 1.0 and token < 1.0, (welcome, ack, token)
        print(f"\nlogin flood: {statuses.count(401)} x 401, {statuses.count(503)} x 503; "
              f"shopper welcome/ack/token {welcome:.3f}/{ack:.3f}/{token:.3f} s; "
              f"argon2 threads {sorted(set(threads))}, peak concurrent {running_now[1]}")
        # The correct password still works once the flood is over.
        status, _, _ = await asyncio.to_thread(
            http, running, "POST", "/console/login", basic("ana@shop.example"))
        assert status == 200


async def test_password_checks_are_bounded_and_paced() -> None:
    checks = login_security.PasswordChecks(max_concurrent=1, max_waiting=2, max_per_second=4)
    stored = login_security.hash_password("correct horse battery")
    outcomes: list[str] = []

    async def one() -> None:
        try:
            async with checks.slot():
                ok, _ = await checks.verify(stored, "wrong guess here")
                outcomes.append("checked" if not ok else "??")
        except login_security.Busy:
            outcomes.append("busy")

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(6)))
    elapsed = time.monotonic() - t0
    checks.close()
    assert sorted(outcomes) == ["busy"] * 3 + ["checked"] * 3  # 1 running + 2 waiting
    assert elapsed >= 0.7  # 3 checks at 4 a second
    assert checks.peak == 3


def agent_socket_checks(running: Running) -> login_security.PasswordChecks:
    handler = running.app.router.routes["/console/login"]
    return handler.__self__.checks  # type: ignore[attr-defined,no-any-return]


# ---- 3. handoff and other frames against the limits ----------------------------------------


async def test_handoff_flood_from_one_address_is_capped(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        codes: list[str] = []
        for _ in range(30):
            async with client_from(running, "127.0.0.2") as client:
                await client.hello()
                await client.send(type="handoff", reason="x" * 2000)
                await client.send(type="message", id="m_sentinel", text="")
                frames = await client.until(lambda f: f.get("ref") == "m_sentinel"
                                            or f.get("code") == "rate_limited")
                codes += [f["code"] for f in frames if f["type"] == "error"]
        with running.db.session() as session:
            waiting = session.scalar(select(func.count()).select_from(Conversation)
                                     .where(Conversation.state == "waiting"))
        assert waiting == Limits().waiting_per_ip_per_hour
        assert codes.count("rate_limited") == 30 - waiting
        print(f"\nhandoff flood: 30 hello+handoff from one address -> {waiting} waiting, "
              f"{codes.count('rate_limited')} rate_limited")
        # Another address can still ask for a person.
        async with client_from(running, "127.0.0.3") as client:
            await client.hello()
            await client.send(type="handoff")
            await client.until(lambda f: f.get("kind") == "handoff_requested")


async def test_every_frame_spends_from_the_connection_and_address_limits(tmp_path: Path) -> None:
    limits = Limits(frames_per_minute_per_ip=40)
    async with running_server(tmp_path, limits=limits) as running:
        # `end`, `stop`, `feedback`, `handoff` spend from the message limit (20/min/conn).
        async with client_from(running, "127.0.0.4") as client:
            await client.hello()
            await client.ask("hello")
            for _ in range(25):
                await client.send(type="end", rating=5)
            await client.send(type="message", id="m_x", text="still here?")
            frames = await client.until(lambda f: f.get("ref") == "m_x")
            limited = [f for f in frames if f.get("code") == "rate_limited"]
            assert len(limited) >= 5
        # `typing` spends from the per-address frame bucket, over all connections.
        async with client_from(running, "127.0.0.5") as a, client_from(running, "127.0.0.5") as b:
            await a.hello()
            await b.hello()
            for _ in range(25):
                await a.send(type="typing", active=True)
                await b.send(type="typing", active=True)
            await a.send(type="message", id="m_a", text="")
            await b.send(type="message", id="m_b", text="")
            got = await a.until(lambda f: f.get("ref") == "m_a" or f.get("code") == "rate_limited")
            got += await b.until(lambda f: f.get("ref") == "m_b"
                                 or f.get("code") == "rate_limited")
            assert any(f.get("code") == "rate_limited" for f in got)
        async with client_from(running, "127.0.0.6") as other:  # another address: unaffected
            assert (await other.hello())["type"] == "welcome"


# ---- 4. lockout is per (account, address) ---------------------------------------------------


async def test_failed_logins_elsewhere_never_lock_the_agent_out(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "boss@shop.example", [], admin=True)
        # The attacker hammers the admin's account from two addresses.
        results = []
        for _ in range(15):
            for ip in ("127.0.0.7", "127.0.0.8"):
                results.append(await raw_login(running.port, ip, "boss@shop.example", "guess!"))
        assert results.count(429) >= 10 and 200 not in results
        print(f"\nlockout: 30 bad logins from 2 addresses -> {results.count(401)} x 401, "
              f"{results.count(429)} x 429")
        # Even with the right password, the attacker's addresses wait ...
        assert await raw_login(running.port, "127.0.0.7", "boss@shop.example", PASSWORD) == 429
        # ... while the admin, from their own address, signs in at once.
        status, _, body = await asyncio.to_thread(
            http_from, "127.0.0.2", running, "POST", "/console/login", basic("boss@shop.example"))
        assert status == 200 and body["agent"]["admin"] is True


# ---- 5. files and logs ------------------------------------------------------------------------


async def test_serve_files_are_private_and_logs_hold_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from chatbot.commands import serve as serve_cmd
    from tests.fakes import FakeAnswerer
    from tests.integration.test_server_serve import _free_port

    caplog.set_level(logging.INFO)
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)  # as an older version left it
    old_umask = os.umask(0o022)
    fake = FakeAnswerer()

    async def fake_loader(*args: object) -> FakeAnswerer:
        return fake

    monkeypatch.setattr(serve_cmd, "_load_answerer", fake_loader)
    port = _free_port()
    settings = Settings.from_env({"CHATBOT_HOME": str(home)}).replace(port=port)
    server = asyncio.create_task(serve_cmd.run_server(settings, demo=True, drain_s=0.1))
    try:
        for _ in range(400):
            if any("answerer ready" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        login_file = home / "demo-console-login.txt"
        demo_email, demo_password = login_file.read_text().split()[:2]

        # Files: data dir 0700, database and secret files 0600, new files private (umask).
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        for name in ("chatbot.db", "chatbot.db-wal", "chatbot.db-shm", login_file.name):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
        assert os.umask(0o077) == 0o077

        # Traffic with every kind of secret in it.
        typed_email = "typed-secret-email-7731@example.com"
        typed_password = "typed-secret-password-5520"
        running = Running(None, port, fake, None, {}, {})  # type: ignore[arg-type]
        assert await raw_login(port, "127.0.0.1", typed_email, typed_password) == 401
        assert await raw_login(port, "127.0.0.1", f"{demo_password}", "x" * 12) == 401
        status, headers, _ = await asyncio.to_thread(
            http, running, "POST", "/console/login", basic(demo_email, demo_password))
        assert status == 200
        session_token = re.search(r"chatbot_console=([^;]+)", headers["Set-Cookie"]).group(1)
        from chatbot.storage.db import Database

        db = Database(settings.database_url)
        with db.session() as session:
            secret = session.scalars(select(Store.identity_secret)
                                     .where(Store.name == "demo")).one()
            customer = session.scalars(select(Customer.source_id)
                                       .where(Customer.store_id == 1)).first()
        db.dispose()
        id_token = identity.sign(secret, customer, ttl_s=600)
        async with chat_client(f"ws://127.0.0.1:{port}/ws/chat") as shopper:
            welcome = await shopper.hello()
            resume_token = welcome["resume_token"]
            await shopper.ask("status of order #NW10001 email typed-guest-email-1@example.com")
        async with chat_client(f"ws://127.0.0.1:{port}/ws/chat") as signed:
            await signed.hello(identity=id_token)
    finally:
        os.umask(old_umask)
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert str(login_file) in logged  # the log names the file ...
    for leaked in (demo_password, typed_email, typed_password, session_token, resume_token,
                   id_token, secret, "typed-guest-email-1@example.com"):
        assert leaked not in logged, leaked  # ... and holds no secret


# ---- 6. and 7. logout ---------------------------------------------------------------------------


async def test_logout_is_post_only_and_same_origin(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        token = token_for(running.db, "ana@shop.example")
        jar = {"Cookie": f"chatbot_console={token}"}
        same = f"http://127.0.0.1:{running.port}"
        other_port = f"http://127.0.0.1:{running.port + 1}"  # same site, another origin

        status, _, _ = await asyncio.to_thread(http, running, "GET", "/console/logout", jar)
        assert status == 405
        status, _, body = await asyncio.to_thread(
            http, running, "POST", "/console/logout", {**jar, "Origin": other_port})
        assert (status, body["error"]) == (403, "forbidden")
        status, _, _ = await asyncio.to_thread(http, running, "GET", "/console/session", jar)
        assert status == 200  # still signed in
        status, _, body = await asyncio.to_thread(
            http, running, "POST", "/console/logout", {**jar, "Origin": same})
        assert (status, body) == (200, {"logged_out": True})
        status, _, _ = await asyncio.to_thread(http, running, "GET", "/console/session", jar)
        assert status == 401


async def test_logout_and_removal_close_sockets_at_once(tmp_path: Path) -> None:
    assert agent_socket.SESSION_CHECK_S >= 5  # the timer is not what closes them below
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        add_agent(running.db, "sam@shop.example", ["demo"])
        add_agent(running.db, "boss@shop.example", [], admin=True)
        ana_token = token_for(running.db, "ana@shop.example")
        async with agent_client(running, ana_token) as ana, \
                agent_client(running, token_for(running.db, "sam@shop.example")) as sam, \
                agent_client(running, token_for(running.db, "boss@shop.example")) as boss:
            for client in (ana, sam):
                await client.send(type="subscribe_inbox", store="demo")
                await client.until("inbox")
            t0 = time.monotonic()
            status, _, _ = await asyncio.to_thread(
                http, running, "POST", "/console/logout",
                {"Cookie": f"chatbot_console={ana_token}"})
            assert status == 200
            assert await ana.closed_code(timeout=2) == 1008
            closed_after = time.monotonic() - t0
            assert closed_after < 1.5
            print(f"\nlogout closed the socket after {closed_after * 1000:.0f} ms")
            # A shopper's message now reaches nobody on Ana's (closed) socket; Sam still works.
            async with running.client() as shopper:
                await shopper.hello()
                await shopper.ask("hello")
            await sam.until("inbox_update")
            # An admin removes Sam: Sam's socket closes at once too.
            t0 = time.monotonic()
            await boss.send(type="remove_agent", email="sam@shop.example")
            await boss.until("agents")
            assert await sam.closed_code(timeout=2) == 1008
            assert time.monotonic() - t0 < 1.5


# ---- 8. input ranges, malformed HTTP, metrics ---------------------------------------------------


async def test_huge_last_seq_is_a_bad_message_not_1011(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        async with running.client() as client:
            welcome = await client.hello()
            await client.ask("hello")
        cid, token = welcome["conversation_id"], welcome["resume_token"]
        for bad in (2**63, 2**64 + 5, -(2**63) - 1, 10**30):
            async with running.client() as client:
                await client.send(type="hello", store="demo", conversation_id=cid,
                                  resume_token=token, last_seq=bad)
                err = await client.recv()
                assert (err["type"], err["code"]) == ("error", "bad_message")
                # Still open, still usable.
                again = await client.hello(conversation_id=cid, resume_token=token, last_seq=1)
                assert again["resumed"] is True
        for bad_rating in (2**63, 6, 0):
            async with running.client() as client:
                await client.hello()
                await client.send(type="end", rating=bad_rating)
                assert (await client.recv())["code"] == "bad_message"


async def test_duplicate_host_header_is_400_not_1011(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        add_agent(running.db, "ana@shop.example", ["demo"])
        token = token_for(running.db, "ana@shop.example")
        for path in ("/ws/agent", "/ws/chat", "/console/session"):
            reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\nHost: evil.example\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: http://127.0.0.1:{running.port}\r\n"
                f"Cookie: chatbot_console={token}\r\n\r\n".encode()
            )
            status = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            assert status.startswith(b"HTTP/1.1 400"), (path, status)


async def test_metrics_token(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        assert "chatbot_connections" in await asyncio.to_thread(_get, running.port, "/metrics")
        running.app.settings = running.app.settings.replace(metrics_token="s3cret-scrape")
        import urllib.error

        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            with pytest.raises(urllib.error.HTTPError) as err:
                await asyncio.to_thread(_get, running.port, "/metrics", headers)
            assert err.value.code == 401
        body = await asyncio.to_thread(_get, running.port, "/metrics",
                                       {"Authorization": "Bearer s3cret-scrape"})
        assert "chatbot_console_logins_total" in body or "chatbot_connections" in body
    assert Settings.from_env({"CHATBOT_METRICS_TOKEN": "t"}).metrics_token == "t"
