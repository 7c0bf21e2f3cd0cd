"""``ruff check`` stays clean on the whole repository, with the project's configuration.

Nothing ran the linter in CI, and 28 findings had crept in (long lines, an unused import,
unsorted import blocks). ruff is in the ``dev`` extras; without it the test is skipped.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None,
    reason="ruff is not installed (pip install -e '.[dev]')",
)


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_ruff_finds_nothing_in_the_repository() -> None:
    run = _ruff(".")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_ruff_would_report_a_finding(tmp_path: Path) -> None:
    """The configuration still checks something (a canary with an unused import)."""
    canary = tmp_path / "lint_canary.py"
    canary.write_text("import os\n", encoding="utf-8")
    run = _ruff("--config", str(ROOT / "pyproject.toml"), str(canary))
    assert run.returncode == 1 and "F401" in run.stdout
