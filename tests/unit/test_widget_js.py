"""Runs the widget's JavaScript tests (``web_widget/tests/*.test.mjs``) with Node's test runner.

They check ``widget.js``'s protocol handling against ``web_widget/protocol-examples.json``,
the same file ``tests/unit/test_protocol_examples.py`` checks the Python side with. Skipped
when Node 18+ is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS_TESTS = sorted((ROOT / "web_widget" / "tests").glob("*.test.mjs"))


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.skip("node is not installed")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    major = int(re.match(r"v(\d+)", version.stdout.strip()).group(1))  # type: ignore[union-attr]
    if major < 18:
        pytest.skip(f"node {version.stdout.strip()} is too old for node --test")
    return path


def test_there_are_widget_js_tests() -> None:
    assert JS_TESTS, "web_widget/tests/*.test.mjs is empty"


@pytest.mark.parametrize("script", JS_TESTS, ids=lambda p: p.name)
def test_widget_js(script: Path) -> None:
    result = subprocess.run(
        [node(), "--test", str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"^# fail 0$", result.stdout, re.M), result.stdout[-2000:]
