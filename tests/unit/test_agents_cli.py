"""``chatbot agents``: add, list, passwd, grant/revoke, remove, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatbot.agents import sessions
from chatbot.cli import cli
from chatbot.errors import AuthError
from chatbot.storage.db import Database
from knowledge_base.stores import get_or_create_store


def _run(runner: CliRunner, data_dir: Path, *args: str, stdin: str | None = None,
         env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(cli, ["--data-dir", str(data_dir), "agents", *args], input=stdin,
                         env=env, catch_exceptions=False)


def test_agents_commands_end_to_end(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'chatbot.db'}")
    with db.transaction() as s:
        get_or_create_store(s, "demo")
        get_or_create_store(s, "tau")
    runner = CliRunner()

    out = _run(runner, tmp_path, "add", "Ana@Shop.example", "--store", "demo", "--name", "Ana",
               "--password-stdin", stdin="a long passphrase\n")
    assert out.exit_code == 0, out.output
    assert "added ana@shop.example" in out.output
    out = _run(runner, tmp_path, "add", "boss@shop.example", "--admin",
               env={"CHATBOT_AGENT_PASSWORD": "the boss passphrase"})
    assert out.exit_code == 0, out.output

    # Errors are one clean line, not a traceback.
    dup = _run(runner, tmp_path, "add", "ana@shop.example", "--store", "demo",
               "--password-stdin", stdin="another passphrase\n")
    assert dup.exit_code != 0 and "already exists" in dup.output
    weak = _run(runner, tmp_path, "add", "x@shop.example", "--store", "demo",
                "--password-stdin", stdin="short\n")
    assert weak.exit_code != 0 and "at least 10 characters" in weak.output
    nostore = _run(runner, tmp_path, "add", "y@shop.example", "--store", "nope",
                   "--password-stdin", stdin="a long passphrase\n")
    assert nostore.exit_code != 0 and "unknown store" in nostore.output
    # No stdin and no terminal: a clear usage error instead of hanging on a prompt.
    nopass = _run(runner, tmp_path, "add", "z@shop.example", "--store", "demo")
    assert nopass.exit_code != 0 and "no password given" in nopass.output

    listed = json.loads(_run(runner, tmp_path, "list", "--json").output)
    assert [(a["email"], a["admin"], a["stores"]) for a in listed] == [
        ("ana@shop.example", False, ["demo"]),
        ("boss@shop.example", True, []),
    ]
    assert "* (admin)" in _run(runner, tmp_path, "list").output

    with db.transaction() as s:
        token = sessions.login(s, "ana@shop.example", "a long passphrase").token
    out = _run(runner, tmp_path, "passwd", "ana@shop.example", "--password-stdin",
               stdin="a new passphrase\n")
    assert out.exit_code == 0, out.output
    with db.transaction() as s:
        assert sessions.login(s, "ana@shop.example", "a new passphrase").agent
        with pytest.raises(AuthError):
            sessions.authenticate(s, token)  # the old session ended with the password change

    assert _run(runner, tmp_path, "grant", "ana@shop.example", "--store", "tau").exit_code == 0
    assert _run(runner, tmp_path, "revoke", "ana@shop.example", "--store", "demo").exit_code == 0
    listed = json.loads(_run(runner, tmp_path, "list", "--json").output)
    assert listed[0]["stores"] == ["tau"]

    assert _run(runner, tmp_path, "remove", "ana@shop.example", "--yes").exit_code == 0
    gone = _run(runner, tmp_path, "remove", "ana@shop.example", "--yes")
    assert gone.exit_code != 0 and "no agent" in gone.output
    db.dispose()
