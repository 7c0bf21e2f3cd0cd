"""Console login cost: our argon2id parameters against argon2-cffi's defaults.

    python bench/console_login.py [--rounds 20]

A console login verifies one password. The console uses OWASP's argon2id parameters
(19 MiB, 2 passes, 1 lane, see chatbot/agents/passwords.py); the baseline measured in the
same run is argon2-cffi's default profile (RFC 9106 low-memory: 64 MiB, 3 passes, 4
lanes). Also measured: a whole session lookup (SHA-256 of the token + one indexed query),
which every console action pays. Prints median/p90 milliseconds and writes
bench/results/console_login.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatbot.agents import accounts, sessions  # noqa: E402
from chatbot.agents.passwords import hash_password, verify_password  # noqa: E402
from chatbot.storage.db import Database  # noqa: E402
from knowledge_base.stores import get_or_create_store  # noqa: E402

PASSWORD = "correct horse battery staple"


def timed(fn: Callable[[], Any], rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    ours = hash_password(PASSWORD)
    default = PasswordHasher()
    baseline_hash = default.hash(PASSWORD)

    def baseline() -> None:
        default.verify(baseline_hash, PASSWORD)

    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "rounds": args.rounds,
        "ours_argon2id_19MiB_t2_p1": timed(lambda: verify_password(ours, PASSWORD), args.rounds),
        "baseline_argon2_cffi_default_64MiB_t3_p4": timed(baseline, args.rounds),
    }
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        with db.transaction() as session:
            get_or_create_store(session, "demo")
            accounts.add_agent(session, "ana@shop.example", PASSWORD, stores=["demo"])
            token = sessions.login(session, "ana@shop.example", PASSWORD).token

        def lookup() -> None:
            with db.transaction() as session:
                sessions.authenticate(session, token)

        results["session_lookup_sqlite"] = timed(lookup, args.rounds * 10)
        db.dispose()

    for name, value in results.items():
        print(f"{name}: {value}")
    out = REPO / "bench" / "results" / "console_login.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
