"""``chatbot kb`` end to end: import, stats, export, errors, against a real SQLite file."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from chatbot.cli import cli

REPO = Path(__file__).resolve().parents[2]
TAU = REPO.parent / "shared" / "datasets" / "tau_retail"
DEMO_FILE = REPO / "knowledge_base" / "demo" / "store.json.gz"
SHOPIFY_SAMPLE = REPO / "tests" / "data" / "shopify_products.csv"

needs_tau = pytest.mark.skipif(not (TAU / "orders.json").exists(), reason="no ../shared τ data")


@pytest.fixture()
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'chatbot.db'}"

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(
            cli, ["--data-dir", str(tmp_path), "--database-url", url, *args],
            catch_exceptions=False,
        )

    return invoke


@needs_tau
def test_tau_import_twice_then_stats(run) -> None:  # type: ignore[no-untyped-def]
    first = run("kb", "import", "--format", "tau-retail", str(TAU), "--store", "tau", "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert summary["customers"]["created"] == 500 and summary["orders"]["created"] == 1000
    assert summary["products"]["created"] == 50 and summary["variants"]["created"] == 591
    assert summary["seconds"] < 60

    second = run("kb", "import", "--format", "tau-retail", str(TAU), "--store", "tau")
    assert second.exit_code == 0, second.output
    assert "into store 'tau'" in second.output
    orders_row = next(line for line in second.output.splitlines() if "orders" in line)
    assert orders_row.split() == ["orders", "0", "0", "1000"]

    stats = run("kb", "stats", "--store", "tau", "--json")
    counts = json.loads(stats.output)
    assert (counts["customers"], counts["orders"], counts["products"], counts["variants"]) == (
        500, 1000, 50, 591)
    assert counts["shipments"] == 577 and counts["payments"] == 1000

    text = run("kb", "stats", "--store", "tau").output
    assert "customers        500" in text and "variants         591" in text
    assert "pending: 423" in text


def test_demo_export_import_export_is_identical(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("kb", "demo").exit_code == 0
    first = tmp_path / "demo.json"
    assert run("kb", "export", "--store", "demo", "-o", str(first)).exit_code == 0
    result = run("kb", "import", "--format", "json", str(first), "--store", "copy")
    assert result.exit_code == 0, result.output
    second = run("kb", "export", "--store", "copy")  # to stdout
    a, b = json.loads(first.read_text()), json.loads(second.output)
    assert (a["store"].pop("name"), b["store"].pop("name")) == ("demo", "copy")
    assert a == b
    assert len(a["orders"]) == 1000 and len(a["products"]) >= 150
    gz = tmp_path / "demo.json.gz"
    assert run("kb", "export", "--store", "demo", "-o", str(gz)).exit_code == 0
    assert json.loads(gzip.decompress(gz.read_bytes())) == json.loads(first.read_text())


def test_broken_file_is_a_clean_error(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("kb", "import", "--format", "shopify-csv", str(SHOPIFY_SAMPLE),
               "--store", "harbor").exit_code == 0
    before = run("kb", "export", "--store", "harbor").output
    bad = tmp_path / "bad.csv"
    lines = SHOPIFY_SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    # Line 10 is the mug's "Slate" variant row once the multi-line body is counted.
    index = next(i for i, line in enumerate(lines) if "HC-MUG-SLA" in line)
    lines[index] = lines[index].replace(",28.00,", ",twenty,")
    bad.write_text("".join(lines), encoding="utf-8")
    result = run("kb", "import", "--format", "shopify-csv", str(bad), "--store", "harbor")
    assert result.exit_code == 1
    assert f"{bad}: line {index + 1}: field 'Variant Price' is not a valid amount" in result.output
    assert "Traceback" not in result.output
    assert run("kb", "export", "--store", "harbor").output == before

    missing = run("kb", "stats", "--store", "nope")
    assert missing.exit_code == 1 and "unknown store 'nope'" in missing.output


def test_kb_help_lists_commands_and_formats(run) -> None:  # type: ignore[no-untyped-def]
    out = run("kb", "--help").output
    for name in ("import", "export", "stats", "demo", "stores"):
        assert name in out
    out = run("kb", "import", "--help").output
    assert "json|tau-retail|shopify-csv" in out


def test_console_script_imports_the_demo_file(tmp_path: Path) -> None:
    env = {**os.environ, "CHATBOT_HOME": str(tmp_path), "CHATBOT_LOG_LEVEL": "WARNING"}
    env.pop("CHATBOT_DATABASE_URL", None)
    cmd = [sys.executable, "-m", "chatbot", "kb", "import", "--format", "json", str(DEMO_FILE),
           "--store", "demo", "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "orders" in done.stdout and "1000" in done.stdout
    assert (tmp_path / "chatbot.db").exists()
