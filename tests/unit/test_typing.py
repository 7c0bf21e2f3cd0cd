"""``mypy chatbot knowledge_base`` stays clean, with the project's own configuration.

Type errors crept in while nothing ran mypy (seven of them, in four files); this test is
what keeps them out: it runs mypy the way a developer does (``pyproject.toml``'s
``[tool.mypy]``) and fails on any error. A canary file with one known error is checked
in the same run, so a configuration that silences everything fails here too.

mypy is in the ``dev`` extras; without it the test is skipped. Its cache lives in the
system's temporary folder, one per checkout: a cold run takes about 40 s on two cores,
a warm one (nothing changed) a few seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("chatbot", "knowledge_base")
# Far fewer files than the packages hold means mypy did not look at them.
MIN_FILES = 150

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                       reason="mypy is not installed (pip install -e '.[dev]')"),
]

ERROR = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): error: ", re.MULTILINE)


def _cache_dir() -> Path:
    checkout = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"chatbot-mypy-cache-{checkout}"


def test_mypy_finds_no_error_in_chatbot_and_knowledge_base(tmp_path: Path) -> None:
    canary = tmp_path / "typing_canary.py"
    canary.write_text('count: int = "three"\n', encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(_cache_dir()), *CHECKED, str(canary)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    output = run.stdout + run.stderr
    errors = list(ERROR.finditer(output))
    # The canary's error is reported: the configuration does not hide errors.
    assert any(Path(m["path"]).name == canary.name for m in errors), output
    ours = [output[m.start():output.find("\n", m.start())] for m in errors
            if Path(m["path"]).name != canary.name]
    assert not ours, "mypy errors:\n" + "\n".join(ours)
    checked = re.search(r"in 1 file \(checked (\d+) source files\)", output)
    assert checked is not None, output
    assert int(checked.group(1)) >= MIN_FILES, output
