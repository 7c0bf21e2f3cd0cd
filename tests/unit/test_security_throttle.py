"""The database-backed failure throttle (issue #18): backoff, lockout, and limits that hold
across processes (two engines on one SQLite file, racing threads, no shared memory)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from chatbot.security.models import SecurityThrottle
from chatbot.security.throttle import Key, Policy, Throttle
from chatbot.storage.db import Database
from tests.pg import throwaway_pg_database

POLICY = Policy("test", limit=5, window=timedelta(hours=1), base_delay=timedelta(0))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 12, 0, 0)

    def __call__(self) -> datetime:
        return self.now


def attempt(db: Database, throttle: Throttle, keys: list[Key], *, ok: bool = False) -> bool:
    """One reserved attempt; True when it was allowed (then settled as ``ok``)."""
    with db.transaction() as session:
        refusal = throttle.reserve(session, keys)
    if refusal is not None:
        return False
    with db.transaction() as session:
        throttle.settle(session, keys, failed=not ok)
    return True


def test_limit_backoff_and_doubling_lockouts(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    clock = Clock()
    throttle = Throttle(clock)
    policy = Policy("p", limit=5, window=timedelta(hours=1), base_delay=timedelta(seconds=1),
                    free=2)
    keys = [Key(policy, "victim@example.com")]
    assert attempt(db, throttle, keys) and attempt(db, throttle, keys)  # two free failures
    assert attempt(db, throttle, keys)  # the third starts the backoff: 1 s
    assert not attempt(db, throttle, keys)
    clock.now += timedelta(seconds=1)
    assert attempt(db, throttle, keys)  # 4th failure: 2 s
    clock.now += timedelta(seconds=1)
    assert not attempt(db, throttle, keys)
    clock.now += timedelta(seconds=1)
    assert attempt(db, throttle, keys)  # 5th failure: locked for the window (1 h)
    for minutes in (1, 29, 29):  # 1, 30 and 59 minutes into the lockout
        clock.now += timedelta(minutes=minutes)
        assert not attempt(db, throttle, keys)
    clock.now += timedelta(hours=1)
    # A new window; the next lockout lasts twice as long.
    for _ in range(5):
        assert attempt(db, throttle, keys)
        clock.now += timedelta(seconds=10)
    with db.transaction() as session:
        refusal = throttle.reserve(session, keys)
    assert refusal is not None and refusal.retry_after_s > 3600


def test_success_gives_the_attempt_back(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    throttle = Throttle()
    keys = [Key(POLICY, "a")]
    for _ in range(20):
        assert attempt(db, throttle, keys, ok=True)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_database_enforces_the_limit_across_processes(tmp_path: Path, backend: str) -> None:
    """Two "processes" (own engine, own throttle, own cache) and 16 racing threads: never
    more than ``limit`` attempts get through for one key (SQLite: the first statement is a
    write; PostgreSQL: rows locked with SELECT ... FOR UPDATE)."""
    if backend == "postgresql":
        with throwaway_pg_database() as url:
            _race(url)
    else:
        _race(f"sqlite:///{tmp_path / 'shared.db'}")


def _race(url: str) -> None:
    dbs = [Database(url), Database(url)]
    throttles = [Throttle(), Throttle()]
    keys = [Key(POLICY, "victim@example.com"), Key(POLICY, "#NW10123")]
    allowed: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker(i: int) -> None:
        start.wait()
        for _ in range(5):
            ok = attempt(dbs[i % 2], throttles[i % 2], keys)
            with lock:
                allowed.append(ok)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 80
    assert sum(allowed) == POLICY.limit
    # A third process with an empty cache is refused by what the database holds.
    fresh = Throttle()
    fresh.forget_cache()
    with Database(url).transaction() as session:
        assert fresh.reserve(session, keys) is not None
    # Other keys are unaffected, and no key is stored in clear.
    assert attempt(dbs[0], throttles[0], [Key(POLICY, "someone-else@example.com")])
    with dbs[0].session() as session:
        stored = set(session.scalars(select(SecurityThrottle.key)))
    assert all(len(k) == 64 and "@" not in k for k in stored)


def test_a_success_clears_only_keys_that_prove_something(tmp_path: Path) -> None:
    """A typo then the right email: the order and conversation start over; the claimed
    email (and the address) keep their failures, so proving one order of an email does
    not buy guesses at its other orders."""
    from chatbot.security import guest_verification as gv

    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    clock = Clock()
    throttle = Throttle(clock)
    wrong = gv.keys_for(1, "#NW10928", "amelia.miller@example.org", "c_1", "10.0.0.1")
    right = gv.keys_for(1, "#NW10928", "amelia.miller69@example.org", "c_1", "10.0.0.1")
    for _ in range(3):  # three wrong emails for the order (the third starts a backoff)
        assert attempt(db, throttle, wrong)
        clock.now += timedelta(seconds=5)
    assert attempt(db, throttle, right, ok=True)
    with db.session() as session:
        rows = sorted((r.scope, r.failures) for r in session.scalars(select(SecurityThrottle)))
    assert rows == [("guest_address", 3), ("guest_conversation", 0), ("guest_email", 0),
                    ("guest_email", 3), ("guest_order", 0)]
    # Right after, the owner can ask again at once (no backoff left on the order).
    assert attempt(db, throttle, right, ok=True)
