"""Token-event batching in the chat server: database writes vs. streaming latency.

Runs the real server (SQLite, WAL) with a scripted answerer that streams like a fast engine
(N concurrent conversations, T tokens each, a fixed gap between tokens), and real
websockets clients. Configurations, measured in the same run:

- baseline: one transaction per reply batch, no wait (each conversation writes its
  pending tokens as soon as its previous write finished);
- group commit: token appends of all conversations share transactions (GroupWriter);
- group commit + a flush interval (default 30 ms) per reply.

For each it reports:

- database commits and commits per reply,
- time to first token and inter-token gap seen by the clients (p50/p95),
- total wall time.

Usage::

    python3 bench/server_batching.py                 # 16 conversations x 120 tokens
    python3 bench/server_batching.py --conversations 32 --tokens 160 --gap-ms 5

Writes bench/results/server_batching.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect  # noqa: E402

from chatbot.server.app import ChatServer  # noqa: E402
from chatbot.settings import Limits, Settings  # noqa: E402
from chatbot.storage.db import Database  # noqa: E402
from knowledge_base.stores import get_or_create_store  # noqa: E402
from tests.fakes import FakeAnswerer  # noqa: E402


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_conversation(url: str, index: int) -> dict[str, Any]:
    async with connect(url) as ws:
        await ws.send(json.dumps({"v": 1, "type": "hello", "store": "bench"}))
        while json.loads(await ws.recv())["type"] != "welcome":
            pass
        sent = time.perf_counter()
        await ws.send(json.dumps({"v": 1, "type": "message", "id": f"m{index}", "text": "go"}))
        stamps: list[float] = []
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "token":
                stamps.append(time.perf_counter())
            elif frame["type"] == "done":
                break
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "ttft": stamps[0] - sent if stamps else float("nan"),
        "gaps": gaps,
        "tokens": len(stamps),
    }


async def run(interval_s: float, group: bool, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({"CHATBOT_HOME": tmp}).replace(
            limits=Limits(max_connections_per_ip=10_000, messages_per_minute_per_ip=10_000)
        )
        db = Database(settings.database_url)
        with db.transaction() as session:
            get_or_create_store(session, "bench")
        commits = [0]
        event.listen(db.engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
        fake = FakeAnswerer(
            default=[f"w{i} " for i in range(args.tokens)], delay_s=args.gap_ms / 1000
        )
        app = ChatServer(settings, db, fake, flush_interval_s=interval_s, group_commit=group)
        port = await app.start(host="127.0.0.1", port=0)
        url = f"ws://127.0.0.1:{port}/ws/chat"
        before = commits[0]
        started = time.perf_counter()
        results = await asyncio.gather(
            *(one_conversation(url, i) for i in range(args.conversations))
        )
        wall = time.perf_counter() - started
        used = commits[0] - before
        await app.stop(drain_s=0)
        db.dispose()
    gaps = [g for r in results for g in r["gaps"]]
    ttfts = [r["ttft"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {
        "group_commit": group,
        "flush_interval_ms": interval_s * 1000,
        "conversations": args.conversations,
        "tokens_received": tokens,
        "db_commits": used,
        "commits_per_reply": used / args.conversations,
        "tokens_per_commit": tokens / max(1, used),
        "ttft_p50_ms": pct(ttfts, 0.5) * 1000,
        "ttft_p95_ms": pct(ttfts, 0.95) * 1000,
        "gap_p50_ms": pct(gaps, 0.5) * 1000,
        "gap_p95_ms": pct(gaps, 0.95) * 1000,
        "gap_mean_ms": statistics.fmean(gaps) * 1000 if gaps else float("nan"),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    parser.add_argument("--interval-ms", type=float, default=30.0)
    args = parser.parse_args()
    configs = [
        ("baseline", 0.0, False),
        ("group commit", 0.0, True),
        (f"group + {args.interval_ms:g} ms", args.interval_ms / 1000, True),
    ]
    report: dict[str, Any] = {"args": vars(args), "runs": {}}
    for name, interval, group in configs:
        r = asyncio.run(run(interval, group, args))
        report["runs"][name] = r
        print(
            f"{name:18s} commits {r['db_commits']:6d} ({r['tokens_per_commit']:5.1f} tok/commit)"
            f"  ttft p50 {r['ttft_p50_ms']:7.1f} ms p95 {r['ttft_p95_ms']:7.1f} ms"
            f"  gap p50 {r['gap_p50_ms']:5.1f} ms p95 {r['gap_p95_ms']:6.1f} ms"
            f"  wall {r['wall_s']:.2f} s"
        )
    base = report["runs"]["baseline"]["db_commits"]
    for name in list(report["runs"])[1:]:
        ratio = base / max(1, report["runs"][name]["db_commits"])
        print(f"{name}: {ratio:.1f}x fewer commits than the baseline")
    out = ROOT / "bench" / "results" / "server_batching.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
