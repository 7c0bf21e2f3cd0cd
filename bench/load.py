"""Load test: many concurrent shopper connections on loopback against the real server.

Starts ``chatbot serve --demo`` as a subprocess (free port, temporary data dir, the demo
store, the real model unless ``--fake``) or targets ``--server ws://...``, then:

1. **baseline** - one shopper alone asks a few questions: time to first token (TTFT)
   and inter-token gap without load, measured in the same run;
2. **load** - opens ``--connections`` shopper connections (each says ``hello``); ``--active``
   of them ask questions back to back for ``--duration`` seconds, the rest stay idle and
   must still be connected at the end.

Reports connections held, replies completed, errors (any ``error`` frame, refused or
dropped connection, reply without ``done``; target 0), p50/p95 TTFT, time to the first
whole sentence (what a shopper can first read: the claim guard shows checked sentences,
so its first token often is the first sentence) and inter-token gap,
and the server's RSS over time (sampled from ``/proc/<pid>/status``; growth after the
warm-up, the first quarter of the load phase). Per-IP limits are raised for the run via
``CHATBOT_*`` environment variables (every connection comes from 127.0.0.1).

Usage::

    python3 bench/load.py                       # 500 connections, 32 active, 120 s, real model
    python3 bench/load.py --short --fake        # CI form: ~20 s, scripted answerer
    python3 bench/load.py --server ws://127.0.0.1:8080/ws/chat --server-pid 1234

Writes bench/results/load.json (``--output`` to change).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "How long does standard shipping take?",
    "What is your return policy?",
    "Do you ship to Canada?",
    "Can I pay with Klarna?",
    "How do I track my order?",
    "Do you have running shoes in size 10?",
    "How much is express shipping?",
    "Can I change my delivery address after ordering?",
    "What payment methods do you accept?",
    "Do you offer gift wrapping?",
    "How do I exchange an item for another size?",
    "Is there a warranty on backpacks?",
]
# A sentence's end in the shown text: . ! ? followed by a space or a line end ("$4.99" and
# "3.5 kg" do not end one).
SENTENCE_END = re.compile(r"[.!?](\s|$)")
# The scripted answerer of --fake: 24 tokens, 20 ms apart (~0.5 s per reply).
FAKE_SPEC = "24:0.02"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)  # ms


@dataclass
class Stats:
    """What the shoppers saw."""

    replies_sent: int = 0
    replies_completed: int = 0
    replies_interrupted: int = 0
    ttft: list[float] = field(default_factory=list)
    # until the shown text first holds a whole sentence (or the reply ends): what a
    # shopper can first read, whether tokens come one by one or a sentence at a time
    first_sentence: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "replies_sent": self.replies_sent,
            "replies_completed": self.replies_completed,
            "replies_interrupted": self.replies_interrupted,
            "errors": len(self.errors),
            "error_samples": self.errors[:10],
            "ttft_ms": {"p50": pct(self.ttft, 0.5), "p95": pct(self.ttft, 0.95)},
            "first_sentence_ms": {
                "p50": pct(self.first_sentence, 0.5),
                "p95": pct(self.first_sentence, 0.95),
            },
            "inter_token_ms": {"p50": pct(self.gaps, 0.5), "p95": pct(self.gaps, 0.95)},
            "tokens": len(self.gaps) + len(self.ttft),
        }


# ---- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    home: Path, *, fake: bool, connections: int
) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m chatbot serve --demo`` with raised per-IP limits; waits for /readyz."""
    from chatbot.settings import Settings

    port = free_port()
    user = Settings.from_env()  # where the model is already pulled on this machine
    env = {
        **os.environ,
        "CHATBOT_HOME": str(home),
        "CHATBOT_MODEL": str(user.model_path),
        "CHATBOT_MAX_CONNECTIONS": str(connections + 100),
        "CHATBOT_MAX_CONNECTIONS_PER_IP": str(connections + 100),
        "CHATBOT_MESSAGES_PER_MINUTE_PER_CONNECTION": "100000",
        "CHATBOT_MESSAGES_PER_MINUTE_PER_IP": "1000000",
        "PYTHONUNBUFFERED": "1",
    }
    if fake:
        env["CHATBOT_FAKE_ANSWERER"] = FAKE_SPEC
    log = (home / "serve.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatbot", "serve", "--demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{(home / 'serve.log').read_text()[-4000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp,
        ):
            if resp.status == 200:
                return proc, f"ws://127.0.0.1:{port}/ws/chat"
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server not ready within 15 minutes")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def sample_rss(pid: int | None, t0: float, out: list[tuple[float, float]]) -> None:
    while pid is not None:
        value = rss_mib(pid)
        if value is not None:
            out.append((round(time.monotonic() - t0, 1), round(value, 1)))
        await asyncio.sleep(1.0)


# ---- shoppers ------------------------------------------------------------------------------


async def hello(url: str) -> ClientConnection:
    ws = await connect(url, open_timeout=60, max_size=None)
    await ws.send(json.dumps({"v": 1, "type": "hello", "store": "demo"}))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 60))
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"no welcome: {welcome}")
    return ws


async def ask(ws: ClientConnection, msg_id: str, text: str, stats: Stats) -> None:
    """One question: TTFT, gaps between tokens, until ``done`` (errors are counted)."""
    stats.replies_sent += 1
    start = time.monotonic()
    await ws.send(json.dumps({"v": 1, "type": "message", "id": msg_id, "text": text}))
    last: float | None = None
    shown, sentence = "", False  # the reply's text so far; a whole sentence in it yet?
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 300))
        kind = frame["type"]
        if kind == "token":
            now = time.monotonic()
            if last is None:
                stats.ttft.append(now - start)
            else:
                stats.gaps.append(now - last)
            last = now
            shown += frame.get("text", "")
            if not sentence and SENTENCE_END.search(shown):
                sentence = True
                stats.first_sentence.append(now - start)
        elif kind == "done" and frame.get("in_reply_to") == msg_id:
            if last is None:  # a reply without tokens (e.g. a handoff): TTFT is the done
                stats.ttft.append(time.monotonic() - start)
            if not sentence:
                stats.first_sentence.append(time.monotonic() - start)
            stats.replies_completed += 1
            stats.replies_interrupted += bool(frame.get("interrupted"))
            return
        elif kind == "error":
            stats.errors.append(f"{frame.get('code')}: {frame.get('message')}")
            if frame.get("ref") == msg_id:
                return


async def active_shopper(
    url: str, ws: ClientConnection, index: int, stop_at: float, stats: Stats
) -> None:
    counter = itertools.count()
    questions = itertools.cycle(QUESTIONS[index % len(QUESTIONS) :] + QUESTIONS)
    try:
        while time.monotonic() < stop_at:
            await ask(ws, f"m_{index}_{next(counter)}", next(questions), stats)
    except (ConnectionClosed, TimeoutError, OSError) as exc:
        stats.errors.append(f"active shopper {index}: {type(exc).__name__}: {exc}")


async def open_all(url: str, count: int, stats: Stats) -> list[ClientConnection]:
    """Open ``count`` connections, 50 handshakes at a time."""
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> ClientConnection | None:
        async with gate:
            try:
                return await hello(url)
            except Exception as exc:  # refused, reset, timed out: all count as errors
                stats.errors.append(f"connect {i}: {type(exc).__name__}: {exc}")
                return None

    opened = await asyncio.gather(*(one(i) for i in range(count)))
    return [ws for ws in opened if ws is not None]


async def run(args: argparse.Namespace, url: str, pid: int | None) -> dict[str, Any]:
    t0 = time.monotonic()
    rss: list[tuple[float, float]] = []
    sampler = asyncio.create_task(sample_rss(pid, t0, rss))

    baseline = Stats()
    ws = await hello(url)
    for i in range(args.baseline_questions):
        await ask(ws, f"b_{i}", QUESTIONS[i % len(QUESTIONS)], baseline)
    await ws.close()

    load = Stats()
    opened_at = time.monotonic()
    conns = await open_all(url, args.connections, load)
    open_s = time.monotonic() - opened_at
    load_start = time.monotonic()
    stop_at = load_start + args.duration
    await asyncio.gather(
        *(active_shopper(url, c, i, stop_at, load) for i, c in enumerate(conns[: args.active]))
    )
    load_s = time.monotonic() - load_start
    held = sum(1 for c in conns if c.state.name == "OPEN")
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler

    warm_t = load_start - t0 + args.duration / 4
    after = [m for t, m in rss if t >= warm_t]
    return {
        "baseline_one_shopper": baseline.summary(),
        "load": {
            **load.summary(),
            "connections_requested": args.connections,
            "connections_opened": len(conns),
            "connections_held": held,
            "active": args.active,
            "open_all_s": round(open_s, 2),
            "duration_s": round(load_s, 1),
            "replies_per_s": round(load.replies_completed / load_s, 2) if load_s else None,
        },
        "rss_mib": {
            "samples": rss,
            "at_warm_up": after[0] if after else None,
            "max_after_warm_up": max(after) if after else None,
            "end": rss[-1][1] if rss else None,
            "growth_after_warm_up": round(max(after) - after[0], 1) if after else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--active", type=int, default=32)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--baseline-questions", type=int, default=5)
    parser.add_argument(
        "--short", action="store_true", help="CI form: 20 s, 60 connections, 8 active"
    )
    parser.add_argument("--fake", action="store_true", help="scripted answerer, no model")
    parser.add_argument("--server", help="target a running server (ws://host:port/ws/chat)")
    parser.add_argument("--server-pid", type=int, help="its pid, to sample RSS")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args(argv)
    if args.short:
        args.connections, args.active, args.duration = 60, 8, 20.0
        args.baseline_questions = 3
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * args.connections + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the server inherits it

    proc = None
    tmp = tempfile.TemporaryDirectory(prefix="chatbot-load-")
    started = time.monotonic()
    if args.server:
        url, pid = args.server, args.server_pid
    else:
        proc, url = start_server(Path(tmp.name), fake=args.fake, connections=args.connections)
        pid = proc.pid
    ready_s = time.monotonic() - started
    try:
        result = asyncio.run(run(args, url, pid))
    finally:
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        tmp.cleanup()
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "answerer": "scripted " + FAKE_SPEC if args.fake else "real model",
        "server_ready_s": round(ready_s, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        **result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    _print(result)
    return 0 if result["load"]["errors"] == 0 else 1


def _print(r: dict[str, Any]) -> None:
    b, load, rss = r["baseline_one_shopper"], r["load"], r["rss_mib"]
    print(f"answerer: {r['answerer']}; server ready in {r['server_ready_s']} s")
    print(
        f"baseline (1 shopper): TTFT p50 {b['ttft_ms']['p50']} ms p95 {b['ttft_ms']['p95']} ms;"
        f" first sentence p50 {b['first_sentence_ms']['p50']} ms;"
        f" gap p50 {b['inter_token_ms']['p50']} ms p95 {b['inter_token_ms']['p95']} ms"
    )
    print(
        f"load: {load['connections_held']}/{load['connections_requested']} connections held, "
        f"{load['active']} active for {load['duration_s']} s"
    )
    print(
        f"  replies completed {load['replies_completed']}/{load['replies_sent']} "
        f"({load['replies_per_s']}/s), interrupted {load['replies_interrupted']}, "
        f"errors {load['errors']}"
    )
    print(
        f"  TTFT p50 {load['ttft_ms']['p50']} ms p95 {load['ttft_ms']['p95']} ms; "
        f"first sentence p50 {load['first_sentence_ms']['p50']} ms "
        f"p95 {load['first_sentence_ms']['p95']} ms; "
        f"gap p50 {load['inter_token_ms']['p50']} ms p95 {load['inter_token_ms']['p95']} ms"
    )
    print(
        f"server RSS: {rss['at_warm_up']} MiB after warm-up, max {rss['max_after_warm_up']} MiB, "
        f"end {rss['end']} MiB (growth {rss['growth_after_warm_up']} MiB)"
    )
    if load["error_samples"]:
        print("error samples:", *load["error_samples"], sep="\n  ")


if __name__ == "__main__":
    sys.exit(main())
