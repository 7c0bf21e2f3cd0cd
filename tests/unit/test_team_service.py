"""TeamService's login questions on a real database: the read-only check before the
password (on the ``read`` runner's thread, never the database thread's) and the write
after it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from chatbot.agents.accounts import add_agent
from chatbot.agents.services import TeamService
from chatbot.agents.sessions import Credentials
from chatbot.security.login import login_keys
from chatbot.security.throttle import Refusal
from chatbot.storage.db import Database, thread_runner

EMAIL = "lead@example.com"
PASSWORD = "a long enough pass phrase 7"


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'team.db'}")
    with database.transaction() as session:
        add_agent(session, EMAIL, PASSWORD, is_admin=True, name="Lead")
    yield database
    database.dispose()


class Threads:
    """Two runners like the server's: the database thread's and the login reader's; each
    call records the name of the thread its function ran on."""

    def __init__(self, db: Database) -> None:
        self.pools = [ThreadPoolExecutor(1, thread_name_prefix=name)
                      for name in ("db-thread", "auth-read")]
        self.ran_on: list[str] = []
        self.run = self._recording(thread_runner(db, self.pools[0]))
        self.read = self._recording(thread_runner(db, self.pools[1]))

    def _recording(self, runner: Callable[..., Any]) -> Callable[..., Any]:
        async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            def traced(session: Any, *a: Any, **kw: Any) -> Any:
                self.ran_on.append(threading.current_thread().name.split("_")[0])
                return fn(session, *a, **kw)

            return await runner(traced, *args, **kwargs)

        return run

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown()


async def test_login_check_reads_credentials_on_the_reader_thread(db: Database) -> None:
    threads = Threads(db)
    team = TeamService(threads.run, read=threads.read)
    try:
        known = await team.login_check(EMAIL, login_keys(EMAIL, "192.0.2.1"))
        unknown = await team.login_check("nobody@example.com", login_keys("x", "192.0.2.1"))
    finally:
        threads.close()
    assert isinstance(known, Credentials) and known.agent_id is not None and known.active
    assert known.password_hash and known.password_hash.startswith("$argon2id$")
    assert unknown == Credentials(None, None, False)
    assert threads.ran_on == ["auth-read", "auth-read"]


async def test_login_check_refuses_a_backing_off_account_and_address(db: Database) -> None:
    threads = Threads(db)
    team = TeamService(threads.run, read=threads.read)
    keys = login_keys(EMAIL, "192.0.2.9")
    try:
        for _ in range(4):  # three free failures, then the backoff starts
            assert await team.finish_login(keys, None, None, user_agent="t", ip="192.0.2.9") is None
        refused = await team.login_check(EMAIL, keys)
        # Another address is not held back by this one's failures.
        elsewhere = await team.login_check(EMAIL, login_keys(EMAIL, "198.51.100.7"))
    finally:
        threads.close()
    assert isinstance(refused, Refusal) and refused.retry_after_s >= 1
    assert isinstance(elsewhere, Credentials) and elsewhere.agent_id is not None
    # The writes went to the database thread, the checks to the reader.
    assert threads.ran_on == ["db-thread"] * 4 + ["auth-read"] * 2


async def test_without_a_reader_the_check_runs_on_the_database_thread(db: Database) -> None:
    threads = Threads(db)
    try:
        found = await TeamService(threads.run).login_check(EMAIL, login_keys(EMAIL, "::1"))
    finally:
        threads.close()
    assert isinstance(found, Credentials) and threads.ran_on == ["db-thread"]
