"""A transcript whose named import is not on this machine (e.g. the τ store from ../shared)
skips with the reason, and does not stop the session's server from starting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TRANSCRIPT = """
name: needs the tau store
description: the import folder does not exist here
store: {name: tau, import: {format: tau-retail, path: ../no-such-folder}}
turns:
  - shopper: hi
"""


def test_missing_import_data_skips_the_transcript(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "tests" / "transcripts").mkdir(parents=True)
    (root / "tests" / "transcripts" / "t.yaml").write_text(TRANSCRIPT)
    (root / "tests" / "conftest.py").write_text(
        'pytest_plugins = ["chatbot.replay.pytest_plugin"]\n'
    )
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    model: real model\n")
    env = {**os.environ, "CHATBOT_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "tests"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "the store's import data is missing" in done.stdout
