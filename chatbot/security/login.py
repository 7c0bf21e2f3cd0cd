"""Console sign-in under attack: password checks off the database thread, bounded; lockout
by (account, address) with backoff (issue #18).

**Where the argon2 check runs.** argon2id costs ~90 ms of one core and 19 MiB per check.
It used to run inside the conversation service's database call, i.e. on SQLite's single
writer thread, so a flood of failed logins queued every shopper's ``welcome`` and ``ack``
behind it. Now a failed login makes one read on its own thread (is the account+address
backing off? the stored hash; SQLite WAL readers never wait) and one short write on the
database thread (the failure), and the check itself runs in :class:`PasswordChecks`: its
own small thread pool (argon2-cffi releases the GIL), at most ``max_concurrent`` checks
at once (default: half the CPUs, at least one, so the chat always has a core), at a
lower CPU priority (nice +10) than the chat's threads, at most ``max_per_second`` (4)
checks a second in all, and at most ``max_waiting`` logins queued for a slot. A login
beyond that is answered ``503 busy`` at once, without touching the database or spending
any argon2 time: a flood cannot grow a queue. The right password clears its
(account, address) failures.

**Lockout.** Failures are counted per (account, address) in the database
(``security_throttles``): the first 3 failures are free, then each waits 1, 2, 4 ...
seconds before the next try, and 10 failures in 15 minutes lock that pair for 15
minutes (then 30, 60 minutes). Another address, e.g. the agent's own, is not affected,
so nobody can lock an agent out by failing logins in their name. The pair is the same
whether the account exists or not, so answers do not reveal which emails exist.

**No CAPTCHA.** The console is a staff tool on the store's own domain; the controls
above (per-address rate, per-pair backoff and lockout, a global cap on password work,
argon2id with a 10-character minimum) make online guessing slow without asking people
to solve puzzles. The arithmetic is in docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from chatbot.agents.passwords import hash_password, needs_rehash, verify_password
from chatbot.security.throttle import Key, Policy, Throttle

LOGIN = Policy(
    "login_account_address",
    limit=10,
    window=timedelta(minutes=15),
    base_delay=timedelta(seconds=1),
    max_lock=timedelta(hours=1),
    free=3,
    reset_on_success=True,  # the right password clears this account + address
)

throttle = Throttle()


def login_keys(email: str, ip: str) -> list[Key]:
    """The throttled key of a login attempt: the account (as typed) and the address."""
    return [Key(LOGIN, f"{email.strip().lower()}\x00{ip}")]


class Busy(Exception):
    """Too many password checks running and waiting: try again in a few seconds."""


# Password-check threads run at a lower CPU priority than the rest of the server: on a busy
# machine the scheduler gives the chat's threads (event loop, database) the core first.
ARGON2_NICENESS = 10


def _lower_priority() -> None:
    """Lower this thread's CPU priority (Linux: ``setpriority`` on a thread id is per
    thread); elsewhere, or when not allowed, nothing happens."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, max(current, min(19, current + ARGON2_NICENESS)))


class PasswordChecks:
    """A bounded pool for argon2 work, separate from the database thread.

    A login holds a *slot* for its whole sequence (database read, argon2, database
    write), so at most ``max_concurrent`` logins touch the database or a core at once;
    ``max_waiting`` more may queue for a slot; the rest get :class:`Busy` at once.
    """

    def __init__(self, max_concurrent: int | None = None, max_waiting: int = 32,
                 max_per_second: float = 4.0) -> None:
        cpus = os.cpu_count() or 2
        self.max_concurrent = max_concurrent or max(1, cpus // 2)
        self.max_waiting = max_waiting
        # At most this many checks a second in all: a slot is held until its share of a
        # second is over, so password work takes a bounded fraction of the CPU (about
        # 4 x 40-90 ms a second here) however many logins arrive.
        self.max_per_second = max_per_second
        self.executor = ThreadPoolExecutor(
            max_workers=self.max_concurrent, thread_name_prefix="chatbot-argon2",
            initializer=_lower_priority,
        )
        self._slots: asyncio.Semaphore | None = None
        self.pending = 0  # holding or waiting for a slot (event-loop thread only)
        self.peak = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one check slot; raises ``Busy`` when the queue is full."""
        if self.pending >= self.max_concurrent + self.max_waiting:
            raise Busy("password checks are at capacity")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        self.pending += 1
        self.peak = max(self.peak, self.pending)
        try:
            async with self._slots:
                yield
        finally:
            self.pending -= 1

    async def verify(self, stored_hash: str | None, password: str) -> tuple[bool, str | None]:
        """``(ok, new_hash)``: whether it matches, and a stronger hash when one is due."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        ok = await loop.run_in_executor(self.executor, verify_password, stored_hash, password)
        new_hash = None
        if ok and stored_hash is not None and needs_rehash(stored_hash):
            new_hash = await loop.run_in_executor(self.executor, hash_password, password)
        if self.max_per_second > 0:
            # Pace: the caller keeps its slot until this check's share of time is over.
            share = self.max_concurrent / self.max_per_second
            await asyncio.sleep(max(0.0, started + share - loop.time()))
        return ok, new_hash

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
