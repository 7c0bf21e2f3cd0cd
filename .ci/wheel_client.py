"""The client half of ``.ci/wheel_check.sh``: what a shopper's browser asks a fresh install for.

    python wheel_client.py http://127.0.0.1:PORT [--ready-timeout S] [--server-pid PID]

Waits for ``/readyz`` (model pulled, demo store imported, index built), fetches the widget,
the demo page and the console (each must answer 200 with the right kind of body), then opens
``/ws/chat`` as the widget does (``hello`` for the demo store, then one ``message``) and reads
until the reply's ``done``. Exits non-zero with the reason on any failure. Needs only the
standard library and ``websockets`` (a dependency of the package, so the virtualenv has it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request

from websockets.asyncio.client import connect

QUESTION = "How long does shipping take?"
PAGES = {  # path -> (content type prefix, text the body must contain)
    "/widget.js": ("application/javascript", "/ws/chat"),
    "/demo": ("text/html", "<html"),
    "/console": ("text/html", "<html"),
}


def fail(message: str) -> None:
    print(f"wheel check: FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_ready(base: str, timeout_s: float, pid: int | None) -> float:
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout_s:
        if not alive(pid):
            fail(f"the server exited before /readyz answered 200 (last: {last})")
        try:
            status, _, body = get(base + "/readyz")
            last = f"{status} {body.decode(errors='replace').strip()}"
            if status == 200:
                return time.monotonic() - start
        except OSError as exc:  # not listening yet
            last = str(exc)
        time.sleep(1)
    fail(f"/readyz not 200 after {timeout_s:.0f} s (last: {last})")
    raise AssertionError  # unreachable


def check_pages(base: str) -> None:
    for path, (ctype, needle) in PAGES.items():
        status, got_type, body = get(base + path)
        text = body.decode("utf-8", errors="replace")
        if status != 200:
            fail(f"GET {path} answered {status}: {text[:200]!r}")
        if not got_type.startswith(ctype) and not (
            ctype == "application/javascript" and got_type.startswith("text/javascript")
        ):
            fail(f"GET {path}: Content-Type {got_type!r}, expected {ctype}")
        if needle not in text:
            fail(f"GET {path}: the body ({len(body)} bytes) lacks {needle!r}")
        print(f"wheel check: GET {path} -> 200 {got_type}, {len(body)} bytes", flush=True)


async def chat(base: str, timeout_s: float) -> None:
    ws_url = "ws" + base[len("http") :] + "/ws/chat"
    async with connect(ws_url, origin=base, open_timeout=10) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"v": 1, "type": "hello", "store": "demo"}))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if welcome.get("type") != "welcome":
            fail(f"expected welcome after hello, got {welcome}")
        await ws.send(json.dumps({"v": 1, "type": "message", "id": "m_1", "text": QUESTION}))
        tokens: list[str] = []
        acked = False
        started = time.monotonic()
        first_token_s = None
        while True:
            left = timeout_s - (time.monotonic() - started)
            if left <= 0:
                fail(f"no done within {timeout_s:.0f} s ({len(tokens)} tokens so far)")
            event = json.loads(await asyncio.wait_for(ws.recv(), left))
            kind = event.get("type")
            if kind == "ack" and event.get("id") == "m_1":
                acked = True
            elif kind == "token":
                if first_token_s is None:
                    first_token_s = time.monotonic() - started
                tokens.append(event["text"])
            elif kind == "error":
                fail(f"error event: {event}")
            elif kind == "done":
                break
        if not acked:
            fail("the message was never acked")
        if not tokens:
            fail(f"done without any token event: {event}")
        if event.get("interrupted") or not str(event.get("text", "")).strip():
            fail(f"the reply was interrupted or empty: {event}")
        sources = [s.get("id") for s in event.get("sources") or []]
        print(
            f"wheel check: /ws/chat streamed {len(tokens)} tokens (first after "
            f"{first_token_s:.2f} s) and done in {time.monotonic() - started:.2f} s",
            flush=True,
        )
        print(f"wheel check:   Q: {QUESTION}", flush=True)
        print(f"wheel check:   A: {event['text']!r} sources={sources}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", help="http://HOST:PORT of the server")
    parser.add_argument("--ready-timeout", type=float, default=600)
    parser.add_argument("--reply-timeout", type=float, default=120)
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args()
    base = args.base.rstrip("/")
    took = wait_ready(base, args.ready_timeout, args.server_pid)
    print(f"wheel check: /readyz 200 after {took:.1f} s", flush=True)
    check_pages(base)
    asyncio.run(chat(base, args.reply_timeout))


if __name__ == "__main__":
    main()
