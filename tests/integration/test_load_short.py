"""The load benchmark's short form in CI: many connections, continuous questions, 0 errors.

Runs ``bench/load.py --short --fake`` as it is run by hand (the real ``chatbot serve``
subprocess, demo store, scripted answerer so it needs no model): 60 connections, 8 of
them asking back to back for 20 s. The full run (500 connections, 32 active, 2 minutes,
real model) is ``python3 bench/load.py``; its figures are in docs/security.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_short_load_run_has_no_errors_and_completes_every_reply(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    run = subprocess.run(
        [sys.executable, "bench/load.py", "--short", "--fake", "--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    load = result["load"]
    assert load["errors"] == 0, load["error_samples"]
    assert load["connections_held"] == load["connections_requested"] == 60
    assert load["replies_sent"] > 8 * 5  # every active shopper got through several replies
    assert load["replies_completed"] == load["replies_sent"]
    assert load["replies_interrupted"] == 0
    assert load["ttft_ms"]["p50"] is not None and load["inter_token_ms"]["p95"] is not None
    assert result["baseline_one_shopper"]["replies_completed"] == 3
    rss = result["rss_mib"]
    assert len(rss["samples"]) >= 15  # sampled about once a second from /proc
    # No leak: after warm-up the server's memory stays flat (allocator noise only).
    assert rss["growth_after_warm_up"] < 32, rss
