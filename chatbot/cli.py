"""The ``chatbot`` command line: one click group, each command group in its own module.

Library errors become ``click.ClickException`` here, at the edge, and nowhere else.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import click

from chatbot.errors import ChatbotError
from chatbot.settings import Settings

# The installed distribution whose metadata `chatbot --version` reads (pyproject's name).
DISTRIBUTION = "storefront-chatbot"

# name -> "module:attribute"; imported only when the command runs, so `chatbot --help`
# stays fast and a heavy dependency (torch) loads only for commands that need it. Every
# entry must import (tests/unit/test_cli_commands.py): a missing module is an error when
# the command is listed or run, never a command that silently disappears.
COMMANDS: dict[str, str] = {
    "kb": "chatbot.commands.kb:kb",
    "model": "chatbot.commands.model:model",
    "serve": "chatbot.commands.serve:serve",
    "identity": "chatbot.commands.identity:identity",
    "agents": "chatbot.commands.agents:agents",
    "ask": "chatbot.commands.ask:ask",
    "train": "chatbot.commands.train:train",
    "eval": "chatbot.commands.eval:eval_command",
    "replay": "chatbot.commands.replay:replay",
    "transcripts": "chatbot.commands.transcripts:transcripts",
    "actions": "chatbot.commands.actions:actions",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)  # commands added with @cli.command
        return load_command(target)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatbotError as exc:
            raise click.ClickException(str(exc)) from exc


def load_command(target: str) -> click.Command:
    """The click command at ``"module:attribute"``; an ``ImportError`` (a broken install, a
    renamed module) propagates: the command must not vanish from ``chatbot --help``."""
    module_name, attr = target.split(":")
    command = getattr(importlib.import_module(module_name), attr)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command


class State:
    """What the top-level options resolve to; commands read ``ctx.obj``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings


@click.group(cls=LazyGroup)
@click.version_option(package_name=DISTRIBUTION, prog_name="chatbot")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the database, indexes and models live (default: $CHATBOT_HOME or ~/.chatbot).",
)
@click.option("--database-url", help="SQLAlchemy URL (default: SQLite under the data dir).")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path, file_okay=False),
    help="A local Hugging Face causal-LM folder (default: $CHATBOT_MODEL or "
    "<data dir>/models/SmolLM2-135M-Instruct).",
)
@click.option(
    "--adapter",
    "adapter",
    help="A peft LoRA adapter folder, or 'none' (default: $CHATBOT_ADAPTER or the shipped one).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.pass_context
def cli(
    ctx: click.Context,
    data_dir: Path | None,
    database_url: str | None,
    model_path: Path | None,
    adapter: str | None,
    verbose: bool,
) -> None:
    """Grounded customer-service chatbot for online stores.

    \b
    Examples:
      chatbot kb import --format tau-retail ../shared/datasets/tau_retail --store tau
      chatbot kb search --store demo "how long does shipping take"
      chatbot serve --demo
      chatbot --model ~/models/my-llama --adapter none ask --store demo "hi"
    """
    settings = Settings.from_env(
        data_dir=data_dir, database_url=database_url, model_path=model_path, adapter_path=adapter
    )
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, settings.log_level.upper(), 20),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic announces every migration step at INFO; that is noise in command output.
    if not verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    ctx.obj = State(settings)


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="chatbot")
