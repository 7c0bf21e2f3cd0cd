"""Failure throttles kept in the database: backoff after each failure, lockout at a limit.

One :class:`Policy` per kind of key (a claimed email, an order number, a conversation, a
client address, an account + address). Using a throttle takes two short transactions:

1. :meth:`Throttle.reserve` checks every key of an attempt and, when none is locked,
   counts the attempt as a failure on all of them *before* the secret is checked. Two
   processes (or threads) racing with guesses for one key therefore cannot both slip
   under the limit: the first statement of the transaction is a write, so SQLite
   serialises it, and PostgreSQL locks the rows (``SELECT ... FOR UPDATE``).
2. :meth:`Throttle.settle` gives the attempt back when it succeeded, or sets the backoff
   (``base_delay * 2**(n-1)`` after the n-th failure) and, at ``limit`` failures in the
   window, a lockout of ``window * 2**(strikes-1)`` (capped at ``max_lock``).

The database is the truth; memory only caches "locked until" per key, so a locked key is
refused without a query (the cache is per process and bounded; a forgotten entry costs
one query).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from chatbot.security.models import SecurityThrottle
from chatbot.storage.clock import utcnow

_CACHE_KEYS = 100_000


@dataclass(frozen=True)
class Policy:
    """How many failures a key of ``scope`` may have, and how it backs off."""

    scope: str
    limit: int
    window: timedelta
    base_delay: timedelta = timedelta(seconds=1)
    max_lock: timedelta = timedelta(hours=24)
    free: int = 0  # failures without any pause (typos)
    # A success clears the key's failures (it proves the secret behind this key); keys an
    # attacker could clear with a secret of their own (an address, a claimed email whose
    # other orders they want) only get their attempt back.
    reset_on_success: bool = False

    def backoff(self, failures: int) -> timedelta:
        """The pause after the ``failures``-th failure of a window (below the limit)."""
        n = failures - self.free
        if n <= 0:
            return timedelta(0)
        return min(self.base_delay * (2 ** min(n - 1, 30)), self.window)

    def lockout(self, strikes: int) -> timedelta:
        """The lockout after the limit was hit for the ``strikes``-th time."""
        return min(self.window * (2 ** min(max(strikes, 1) - 1, 30)), self.max_lock)


@dataclass(frozen=True)
class Key:
    """One throttled key: its policy and its value (hashed before it is stored)."""

    policy: Policy
    value: str

    @property
    def digest(self) -> str:
        raw = f"{self.policy.scope}\x00{self.value}".encode("utf-8", "surrogatepass")
        return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Refusal:
    """Why an attempt was refused: the scope of the first locked key and when to retry."""

    scope: str
    retry_after_s: int


class Throttle:
    """Database-backed throttling of failures; one instance per process is enough."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self._cache: OrderedDict[str, tuple[datetime, str]] = OrderedDict()
        self._lock = threading.Lock()

    # ---- the in-memory cache of locks ---------------------------------------------------

    def _cached_refusal(self, session: Session, keys: Sequence[Key], now: datetime
                        ) -> Refusal | None:
        where = _where(session)
        with self._lock:
            for key in keys:
                hit = self._cache.get(where + key.digest)
                if hit is not None and hit[0] > now:
                    return Refusal(hit[1], _seconds(hit[0] - now))
        return None

    def _remember(self, session: Session, row: SecurityThrottle, now: datetime) -> None:
        cache_key = _where(session) + row.key
        with self._lock:
            if row.locked_until is not None and row.locked_until > now:
                self._cache[cache_key] = (row.locked_until, row.scope)
                self._cache.move_to_end(cache_key)
                while len(self._cache) > _CACHE_KEYS:
                    self._cache.popitem(last=False)
            else:
                self._cache.pop(cache_key, None)

    def forget_cache(self) -> None:
        """Drop the cache (tests: show that the database alone enforces the limits)."""
        with self._lock:
            self._cache.clear()

    # ---- the two steps ------------------------------------------------------------------

    def reserve(self, session: Session, keys: Sequence[Key]) -> Refusal | None:
        """Refuse the attempt if any key is locked; else count it as a failure on all keys.

        Call in its own transaction, committed before the secret is checked.
        """
        keys = _unique(keys)
        now = self.clock()
        refusal = self._cached_refusal(session, keys, now)
        if refusal is not None or not keys:
            return refusal
        rows = _lock_rows(session, keys, now)
        for key, row in zip(keys, rows, strict=True):
            _roll_window(row, key.policy, now)
            self._remember(session, row, now)
            if row.locked_until is not None and row.locked_until > now:
                return Refusal(row.scope, _seconds(row.locked_until - now))
            if row.failures >= key.policy.limit:
                # In-flight attempts already fill the window; refuse until they settle.
                return Refusal(row.scope, _seconds(key.policy.base_delay))
        for row in rows:
            row.failures += 1
            row.updated_at = now
        session.flush()
        return None

    def settle(self, session: Session, keys: Sequence[Key], *, failed: bool) -> None:
        """After a reserved attempt: give it back on success, back off or lock on failure."""
        keys = _unique(keys)
        if not keys:
            return
        now = self.clock()
        rows = _lock_rows(session, keys, now)
        for key, row in zip(keys, rows, strict=True):
            policy = key.policy
            if not failed and policy.reset_on_success:
                row.failures = 0
                row.locked_until = None
            elif not failed:
                row.failures = max(0, row.failures - 1)
            elif row.failures >= policy.limit:
                row.strikes += 1
                until = now + policy.lockout(row.strikes)
                row.locked_until = max(row.locked_until or until, until)
            else:
                until = now + policy.backoff(row.failures)
                row.locked_until = max(row.locked_until or until, until)
            row.updated_at = now
            self._remember(session, row, now)
        session.flush()

    def fail(self, session: Session, keys: Sequence[Key]) -> None:
        """Count one failure that was not reserved (one write instead of two, for checks
        whose races cost little, e.g. one address's concurrent logins): the same backoff
        and lockout as :meth:`settle` after :meth:`reserve`."""
        keys = _unique(keys)
        if not keys:
            return
        now = self.clock()
        rows = _lock_rows(session, keys, now)
        for key, row in zip(keys, rows, strict=True):
            _roll_window(row, key.policy, now)
            row.failures += 1
        session.flush()
        self.settle(session, keys, failed=True)

    def check(self, session: Session, keys: Sequence[Key]) -> Refusal | None:
        """Whether an attempt would be refused now, without counting anything."""
        now = self.clock()
        refusal = self._cached_refusal(session, keys, now)
        if refusal is not None:
            return refusal
        digests = [k.digest for k in keys]
        rows = session.scalars(select(SecurityThrottle).where(SecurityThrottle.key.in_(digests)))
        for row in rows:
            if row.locked_until is not None and row.locked_until > now:
                self._remember(session, row, now)
                return Refusal(row.scope, _seconds(row.locked_until - now))
            policy = next(k.policy for k in keys if k.digest == row.key)
            if row.failures >= policy.limit and now - row.window_start < policy.window:
                return Refusal(row.scope, _seconds(policy.base_delay))
        return None

    def purge(self, session: Session, *, older_than: timedelta = timedelta(days=7)) -> int:
        """Delete rows untouched for ``older_than`` (longer than any lockout)."""
        result = session.execute(
            delete(SecurityThrottle).where(SecurityThrottle.updated_at < self.clock() - older_than)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def _where(session: Session) -> str:
    """The database a session talks to (the cache never mixes two databases)."""
    bind = session.get_bind()  # an Engine, or the Connection a session was bound to
    engine = bind if isinstance(bind, Engine) else bind.engine
    return str(engine.url) + "\x00"


def _unique(keys: Sequence[Key]) -> list[Key]:
    return list({k.digest: k for k in keys}.values())


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def _roll_window(row: SecurityThrottle, policy: Policy, now: datetime) -> None:
    """Start a new window once the old one is over and no lock is running."""
    locked = row.locked_until is not None and row.locked_until > now
    if not locked and now - row.window_start >= policy.window:
        row.failures = 0
        row.window_start = now
        if now - row.updated_at >= policy.max_lock * 2:
            row.strikes = 0  # quiet for long enough: lockouts start short again


def _lock_rows(session: Session, keys: Sequence[Key], now: datetime) -> list[SecurityThrottle]:
    """The rows of ``keys`` (created when missing), locked for this transaction."""
    digests = [k.digest for k in keys]
    dialect = session.get_bind().dialect.name
    values = [
        {"key": k.digest, "scope": k.policy.scope, "failures": 0, "window_start": now,
         "locked_until": None, "strikes": 0, "updated_at": now}
        for k in keys
    ]
    if dialect in ("sqlite", "postgresql"):
        # A write first: on SQLite it takes the database's write lock for the whole
        # transaction, so the read-modify-write below cannot interleave with another
        # process's.
        # (Each dialect's INSERT is its own type; both have ON CONFLICT DO NOTHING.)
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            session.execute(
                sqlite_insert(SecurityThrottle).values(values).on_conflict_do_nothing())
        else:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            session.execute(pg_insert(SecurityThrottle).values(values).on_conflict_do_nothing())
    else:  # pragma: no cover - other databases: create the missing rows one by one
        have = set(session.scalars(
            select(SecurityThrottle.key).where(SecurityThrottle.key.in_(digests))
        ))
        for value in values:
            if value["key"] not in have:
                session.add(SecurityThrottle(**value))
        session.flush()
    rows = {
        row.key: row
        for row in session.scalars(
            select(SecurityThrottle)
            .where(SecurityThrottle.key.in_(digests))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    return [rows[d] for d in digests]
