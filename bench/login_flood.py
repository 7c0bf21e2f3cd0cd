"""Login flood vs the chat: a shopper's welcome / ack / first token, idle and under a flood of
failed console logins (issue #18, finding 2).

Starts ``chatbot serve --demo --port 0`` as a subprocess (temporary data dir, the demo store,
the scripted answerer ``CHATBOT_FAKE_ANSWERER`` so the figures isolate the login load from
the model), then:

1. **idle** - a shopper opens a socket, says ``hello`` (-> ``welcome``), sends a message
   (-> ``ack``, -> first ``token``), ``--rounds`` times before the flood and again after
   it (pooled: the shared machine's own load drifts);
2. **flood** - 400 failed console logins with made-up emails, 20 from each of 20 loopback
   source addresses (127.0.1.1 ... 127.0.1.20, inside the per-address limit of 20 a
   minute), each address sending its 20 back to back; meanwhile the same shopper round
   runs again and again until the flood is over.

Prints median / p90 / max of each figure in both phases and the flood/idle ratio of the
medians (target: at most 1.5x), the flood's answers by HTTP status, and writes
``bench/results/login_flood.json``. All traffic stays on loopback; the run is bounded
(400 logins, at most ``--max-rounds`` shopper rounds, a 10-minute guard).

    python3 bench/login_flood.py [--rounds 15] [--output bench/results/login_flood.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
ADDRESSES = [f"127.0.1.{i}" for i in range(1, 21)]
LOGINS_PER_ADDRESS = 20
FAKE_SPEC = "8:0.01"  # 8 tokens 10 ms apart: the first token comes at once


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        found = re.search(r"^Model name:\s*(.+)$", out, re.M)
        cores = re.search(r"^CPU\(s\):\s*(\d+)$", out, re.M)
        return f"{found.group(1).strip() if found else platform.processor()}, " \
               f"{cores.group(1) if cores else os.cpu_count()} CPUs"
    except (OSError, subprocess.CalledProcessError):
        return f"{platform.processor() or 'unknown'}, {os.cpu_count()} CPUs"


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m chatbot serve --demo --port 0``; the port from its log, once ready."""
    # Every shopper round comes from 127.0.0.1: lift the per-address message rate for the
    # shopper (the login limits, per address and per account, are untouched).
    env = {**os.environ, "CHATBOT_HOME": str(home), "CHATBOT_FAKE_ANSWERER": FAKE_SPEC,
           "CHATBOT_MESSAGES_PER_MINUTE_PER_IP": "100000", "PYTHONUNBUFFERED": "1"}
    log_path = home / "serve.log"
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatbot", "serve", "--demo", "--host", "127.0.0.1",
         "--port", "0"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log_path.read_text()[-4000:]}")
        text = log_path.read_text(errors="replace")
        port = re.search(r"listening on [\d.]+:(\d+)", text)
        if port and "answerer ready" in text:
            return proc, int(port.group(1))
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server not ready within 5 minutes")


async def shopper_round(port: int, i: int) -> dict[str, float]:
    """hello -> welcome, message -> ack and -> first token (seconds)."""
    async with connect(f"ws://127.0.0.1:{port}/ws/chat") as ws:
        t0 = time.perf_counter()
        await ws.send(json.dumps({"v": 1, "type": "hello", "store": "demo"}))
        while json.loads(await ws.recv())["type"] != "welcome":
            pass
        t1 = time.perf_counter()
        await ws.send(json.dumps({"v": 1, "type": "message", "id": f"m_{i}",
                                  "text": "How long does shipping take?"}))
        ack = token = None
        while token is None:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            now = time.perf_counter()
            if frame["type"] == "ack" and ack is None:
                ack = now
            elif frame["type"] == "token":
                token = now
            elif frame["type"] == "error":
                raise RuntimeError(f"shopper got an error: {frame}")
        return {"welcome": t1 - t0, "ack": (ack or token) - t1, "first_token": token - t1}


async def failed_login(port: int, ip: str, n: int) -> int:
    """One ``POST /console/login`` with a made-up email from ``ip``; the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0))
    auth = base64.b64encode(f"nobody{n}@flood-{ip}.example:wrong password {n}".encode())
    writer.write(
        f"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Basic {auth.decode()}\r\nContent-Length: 0\r\n\r\n".encode()
    )
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 120)
    writer.close()
    return int(line.split()[1])


def summary(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for key in ("welcome", "ack", "first_token"):
        values = sorted(r[key] for r in rounds)
        out[key] = {
            "median_s": round(statistics.median(values), 4),
            "p90_s": round(values[int(0.9 * (len(values) - 1))], 4),
            "max_s": round(values[-1], 4),
        }
    return out


async def measure(port: int, rounds: int, max_rounds: int) -> dict[str, Any]:
    for i in range(3):  # warm-up (first connection, first store lookup)
        await shopper_round(port, 1000 + i)
    idle = []
    for i in range(rounds):
        idle.append(await shopper_round(port, i))
        await asyncio.sleep(0.1)
    idle_before = summary(idle)

    statuses: Counter[int] = Counter()

    async def address(ip: str) -> None:
        for n in range(LOGINS_PER_ADDRESS):
            statuses[await failed_login(port, ip, n)] += 1

    t0 = time.perf_counter()
    flood = asyncio.gather(*(address(ip) for ip in ADDRESSES))
    await asyncio.sleep(0.5)  # let the flood build up first
    loaded: list[dict[str, float]] = []
    while not flood.done() and len(loaded) < max_rounds:
        loaded.append(await shopper_round(port, 100 + len(loaded)))
        await asyncio.sleep(0.5)  # spread the samples over the flood
    await flood
    flood_s = time.perf_counter() - t0
    # Idle again right after: the machine's own load drifts (it is shared), so the idle
    # figure is taken on both sides of the flood and pooled.
    for i in range(rounds):
        idle.append(await shopper_round(port, 500 + i))
        await asyncio.sleep(0.1)
    idle_after = summary(idle[rounds:])
    idle_s, loaded_s = summary(idle), summary(loaded)
    ratios = {k: round(loaded_s[k]["median_s"] / max(idle_s[k]["median_s"], 1e-6), 2)
              for k in idle_s}
    return {
        "idle": idle_s,
        "idle_before": idle_before,
        "idle_after": idle_after,
        "flood": loaded_s,
        "ratio_of_medians": ratios,
        "rounds": {"idle": len(idle), "flood": len(loaded)},
        "flood_logins": sum(statuses.values()),
        "flood_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "flood_seconds": round(flood_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--max-rounds", type=int, default=60)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/login_flood.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="login-flood-") as tmp:
        proc, port = start_server(Path(tmp))
        try:
            result = asyncio.run(asyncio.wait_for(measure(port, args.rounds, args.max_rounds),
                                                  600))
        finally:
            proc.terminate()
            proc.wait(30)
    result = {
        "benchmark": "login_flood",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "answerer": f"CHATBOT_FAKE_ANSWERER={FAKE_SPEC}",
        **result,
    }
    print(f"CPU: {result['cpu']}; load average {result['load_average_at_end']}")
    print(f"flood: {result['flood_logins']} failed logins from {len(ADDRESSES)} addresses in "
          f"{result['flood_seconds']} s, answers {result['flood_statuses']}")
    print(f"{'':12} {'idle median':>12} {'flood median':>13} {'flood p90':>10} "
          f"{'flood max':>10} {'ratio':>6}")
    for key in ("welcome", "ack", "first_token"):
        i, f = result["idle"][key], result["flood"][key]
        print(f"{key:12} {i['median_s'] * 1000:10.1f}ms {f['median_s'] * 1000:11.1f}ms "
              f"{f['p90_s'] * 1000:8.1f}ms {f['max_s'] * 1000:8.1f}ms "
              f"{result['ratio_of_medians'][key]:5.2f}x")
    print("idle before / after (median ms): " + ", ".join(
        f"{k} {result['idle_before'][k]['median_s'] * 1000:.1f} / "
        f"{result['idle_after'][k]['median_s'] * 1000:.1f}" for k in ("welcome", "ack",
                                                                     "first_token")))
    print(f"shopper rounds: {result['rounds']['idle']} idle, {result['rounds']['flood']} "
          "during the flood (target: ratio <= 1.5x)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
