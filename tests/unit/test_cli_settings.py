"""Top-level CLI flags and CHATBOT_* variables resolve into one Settings object."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from chatbot.cli import cli
from chatbot.settings import Settings


@cli.command("_settings_probe", hidden=True)
@click.pass_context
def _probe(ctx: click.Context) -> None:
    settings: Settings = ctx.obj.settings
    click.echo(f"model={settings.model_path}")
    click.echo(f"adapter={settings.adapter_path}")
    click.echo(f"db={settings.database_url}")


def _run(args: list[str], env: dict[str, str]) -> dict[str, str]:
    result = CliRunner().invoke(cli, [*args, "_settings_probe"], env=env)
    assert result.exit_code == 0, result.output
    return dict(line.split("=", 1) for line in result.output.splitlines())


def test_flags_override_environment(tmp_path: Path) -> None:
    env = {"CHATBOT_HOME": str(tmp_path), "CHATBOT_MODEL": "/from/env"}
    out = _run(["--model", str(tmp_path / "m"), "--adapter", "none"], env)
    assert out["model"] == str(tmp_path / "m")
    assert out["adapter"] == "None"
    assert out["db"] == f"sqlite:///{tmp_path / 'chatbot.db'}"


def test_environment_used_without_flags(tmp_path: Path) -> None:
    env = {"CHATBOT_HOME": str(tmp_path), "CHATBOT_MODEL": "/from/env", "CHATBOT_ADAPTER": "/ad"}
    out = _run([], env)
    assert out["model"] == "/from/env"
    assert out["adapter"] == "/ad"


def test_limits_read_from_environment() -> None:
    settings = Settings.from_env({"CHATBOT_MAX_MESSAGE_CHARS": "123", "CHATBOT_HOME": "/x"})
    assert settings.limits.max_message_chars == 123
    assert settings.data_dir == Path("/x")
