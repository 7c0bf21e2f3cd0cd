"""The built wheel carries everything the code opens, and the code finds it there.

Builds the sdist and the wheel the way a release does (``python -m build``: the sdist first,
then the wheel from the unpacked sdist, so nothing from a stale ``build/`` folder can leak in),
then checks:

- every file the code opens at run time, taken from the modules' own constants (the server's
  static folder, the demo store, the migrations, the native kernel's source, the shipped LoRA
  adapter), is in the wheel byte for byte;
- the wheel, unpacked into a folder of its own and imported from there (not from this
  checkout), resolves those same paths inside itself, migrates a fresh database, reads the
  demo store and prints its version;
- the metadata (license, extras, entry point) is complete.

``.ci/wheel_check.sh`` goes further: a fresh virtualenv, ``chatbot serve --demo`` and a
streamed reply. This test needs no network (``--no-isolation`` uses the installed setuptools).
"""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import chatbot.engine.native as native
import chatbot.server.app as app
import chatbot.storage.db as db
import knowledge_base.demo as demo
from chatbot.server.http import STATIC_TYPES
from chatbot.settings import default_adapter_path

ROOT = Path(__file__).resolve().parents[2]
DIST = "storefront_chatbot"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob(f"{DIST}-*-py3-none-any.whl"))
    sdists = list(out.glob(f"{DIST}-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.fixture(scope="module")
def wheel_names(dist: dict[str, Path]) -> set[str]:
    with zipfile.ZipFile(dist["wheel"]) as whl:
        return set(whl.namelist())


def opened_resources() -> dict[str, Path]:
    """What the code opens at run time, from its own constants: label -> file in this checkout."""
    files: dict[str, Path] = {}
    static = app.STATIC_DIR
    for page in ("widget.js", *(name for names in app.PAGES.values() for name in names)):
        if (static / page).is_file():
            files[f"static {page}"] = static / page
    for path in static.iterdir():
        if path.is_file() and path.suffix.lower() in STATIC_TYPES:
            files[f"static {path.name}"] = path
    files["demo store"] = demo.DEMO_STORE_FILE
    files["kernel source"] = native.SOURCE
    for path in sorted(db.MIGRATIONS_DIR.glob("*")) + sorted(db.MIGRATIONS_DIR.glob("versions/*")):
        if path.is_file() and path.suffix in {".py", ".mako", ".ini"}:
            files[f"migration {path.name}"] = path
    adapter = default_adapter_path()
    assert adapter is not None, "the shipped adapter is missing from the checkout"
    for path in adapter.iterdir():
        if path.is_file():
            files[f"adapter {path.name}"] = path
    return files


def test_every_opened_resource_is_in_the_wheel(
    dist: dict[str, Path], wheel_names: set[str]
) -> None:
    resources = opened_resources()
    # The ones the issue names must be among them (a constant that moved would drop them).
    for label in ("static widget.js", "static demo.html", "static console.html", "demo store",
                  "kernel source", "migration env.py", "migration script.py.mako",
                  "adapter adapter_config.json", "adapter adapter_model.safetensors"):
        assert label in resources, label
    assert any(label.startswith("migration 0001") for label in resources)
    missing, differ = [], []
    with zipfile.ZipFile(dist["wheel"]) as whl:
        for label, path in resources.items():
            name = path.resolve().relative_to(ROOT).as_posix()
            if name not in wheel_names:
                missing.append(f"{label}: {name}")
            elif whl.read(name) != path.read_bytes():
                differ.append(f"{label}: {name}")
    assert not missing, f"not in the wheel: {missing}"
    assert not differ, f"different in the wheel: {differ}"


def test_wheel_ships_only_the_packages(wheel_names: set[str]) -> None:
    tops = {name.split("/", 1)[0] for name in wheel_names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {
        "chatbot", "knowledge_base", "web_widget"
    }, tops
    # The widget's JS tests stay in the checkout; nothing of tests/ or bench/ ships.
    assert not [n for n in wheel_names if n.startswith(("web_widget/tests/", "tests/", "bench/"))]


def test_wheel_metadata(dist: dict[str, Path], wheel_names: set[str]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as whl:
        info = next(n for n in wheel_names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(whl.read(info))
        entry_points = whl.read(info.replace("METADATA", "entry_points.txt")).decode()
        licenses = [n for n in wheel_names if ".dist-info/licenses/" in n]
        license_text = whl.read(licenses[0]).decode() if licenses else ""
    assert meta["Name"] == "storefront-chatbot"
    assert meta["License-Expression"] == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert meta["Requires-Python"] == ">=3.11"
    assert {"postgres", "llamacpp", "dev"} <= set(meta.get_all("Provides-Extra") or [])
    requires = meta.get_all("Requires-Dist") or []
    assert any(r.startswith("psycopg") and 'extra == "postgres"' in r for r in requires)
    assert any(r.startswith("build") and 'extra == "dev"' in r for r in requires)
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the expression says it
    assert "chatbot = chatbot.cli:main" in entry_points


def test_sdist_rebuilds_the_same_files(dist: dict[str, Path], wheel_names: set[str]) -> None:
    with tarfile.open(dist["sdist"]) as sdist:
        names = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md", "LICENSE"} <= names
    packaged = {n for n in wheel_names if ".dist-info/" not in n}
    assert packaged <= names, sorted(packaged - names)


def test_installed_wheel_opens_its_own_files(dist: dict[str, Path], tmp_path: Path) -> None:
    """Unpacked on its own (as pip lays it out) and imported from there, not from this checkout."""
    site = tmp_path / "site"
    with zipfile.ZipFile(dist["wheel"]) as whl:
        whl.extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    probe = f"""
import json, sys
import chatbot, chatbot.engine.native as native, chatbot.server.app as app
import chatbot.storage.db as db, knowledge_base.demo as demo
from chatbot.settings import default_adapter_path
from chatbot.cli import main
database = db.Database("sqlite:///{tmp_path / 'probe.db'}")
with database.engine.connect() as conn:
    from sqlalchemy import text
    revision = conn.execute(text("select version_num from alembic_version")).scalar()
print(json.dumps({{
    "chatbot": chatbot.__file__,
    "static": str(app.STATIC_DIR),
    "static_files": sorted(p.name for p in app.STATIC_DIR.iterdir()),
    "demo_store": str(demo.DEMO_STORE_FILE),
    "data_version": demo.shipped_data_version(),
    "migrations": str(db.MIGRATIONS_DIR),
    "revision": revision,
    "kernel": str(native.SOURCE),
    "kernel_exists": native.SOURCE.is_file(),
    "adapter": str(default_adapter_path()),
}}))
sys.stdout.flush()
main(["--version"])
"""
    # PYTHONPATH puts the unpacked wheel before site-packages, whose editable install would
    # otherwise map `chatbot` to this checkout; the checkout itself is not on the path.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env.update(PYTHONPATH=str(site), CHATBOT_HOME=str(tmp_path / "home"))
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, _, rest = proc.stdout.partition("\n")
    got = json.loads(first)
    for key in ("chatbot", "static", "demo_store", "migrations", "kernel", "adapter"):
        assert Path(got[key]).resolve().is_relative_to(site.resolve()), (key, got[key])
    assert {"widget.js", "demo.html", "console.html", "console.js"} <= set(got["static_files"])
    assert "tests" not in got["static_files"]
    assert got["data_version"] == demo.shipped_data_version()
    head = sorted(p.stem.split("_", 1)[0] for p in db.MIGRATIONS_DIR.glob("versions/*.py"))[-1]
    assert got["revision"] is not None and got["revision"].startswith(head), got["revision"]
    assert got["kernel_exists"]
    assert rest.strip() == "chatbot, version 0.1.0"
