"""Every command the ``chatbot`` group lists imports, and a missing one is an error."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from chatbot import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_listed_command_imports(name: str) -> None:
    command = cli.load_command(cli.COMMANDS[name])
    assert isinstance(command, click.Command)
    with click.Context(cli.cli) as ctx:
        assert cli.cli.get_command(ctx, name) is command


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli.cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed == set(cli.COMMANDS)


def test_a_command_whose_module_is_missing_is_an_error_not_a_silent_skip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "ghost", "chatbot.commands.no_such_module:ghost")
    with click.Context(cli.cli) as ctx:
        assert "ghost" in cli.cli.list_commands(ctx)
        with pytest.raises(ModuleNotFoundError):
            cli.cli.get_command(ctx, "ghost")
    result = CliRunner().invoke(cli.cli, ["ghost"])
    assert result.exit_code != 0 and isinstance(result.exception, ModuleNotFoundError)
    monkeypatch.setitem(cli.COMMANDS, "ghost", "chatbot.cli:COMMANDS")
    with pytest.raises(TypeError):
        cli.load_command(cli.COMMANDS["ghost"])
