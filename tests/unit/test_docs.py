"""The docs cover every setting and every CLI option (a test fails when one is missing).

``docs/cli.md`` is generated from the click commands; regenerate it after changing an
option with ``python3 tests/unit/test_docs.py`` (the test only checks coverage, so the
file may be edited by hand as well).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = ROOT / "docs" / "cli.md"


def _docs_text() -> str:
    return "\n".join(
        p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))]
    )


def _commands() -> Iterator[tuple[str, click.Command]]:
    from chatbot.cli import cli

    def walk(cmd: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        yield path, cmd
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    yield from walk(sub, f"{path} {name}")

    yield from walk(cli, "chatbot")


def _options(cmd: click.Command) -> list[click.Option]:
    return [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden]


def _environment_variables() -> set[str]:
    from chatbot.settings import Limits

    names = set(re.findall(r'"(CHATBOT_[A-Z0-9_]+)"', (ROOT / "chatbot/settings.py").read_text()))
    names |= {f"CHATBOT_{f.name.upper()}" for f in dataclasses.fields(Limits)}
    for _, cmd in _commands():
        for option in _options(cmd):
            if isinstance(option.envvar, str):
                names.add(option.envvar)
    return names


def test_every_environment_variable_is_documented() -> None:
    docs = _docs_text()
    assert sorted(n for n in _environment_variables() if f"`{n}" not in docs) == []


def test_every_settings_field_is_read_from_a_documented_variable() -> None:
    """Each field of Settings is set from the environment in from_env (or is a group)."""
    from chatbot.settings import Settings

    source = (ROOT / "chatbot/settings.py").read_text()
    for f in dataclasses.fields(Settings):
        if f.name in ("data_dir", "database_url", "model_path", "adapter_path", "limits"):
            continue  # read above the table in from_env (CHATBOT_HOME, _DATABASE_URL, ...)
        assert f'"{f.name}": ' in source, f"{f.name} is not read in Settings.from_env"


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## `([^`]+)`\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_every_cli_command_and_option_is_in_the_reference() -> None:
    sections = _sections(CLI_DOC.read_text(encoding="utf-8"))
    missing = []
    for path, cmd in _commands():
        section = sections.get(path)
        if section is None:
            missing.append(path)
            continue
        for option in _options(cmd):
            missing += [f"{path} {o}" for o in option.opts + option.secondary_opts
                        if f"`{o}" not in section]
    assert missing == [], "regenerate docs/cli.md: python3 tests/unit/test_docs.py"


# ---- the generator ------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def cli_reference() -> str:
    """docs/cli.md: every command with its first help line and its options."""
    out = [
        "# Command-line reference",
        "",
        "Every `chatbot` command and option, generated from the code by",
        "`python3 tests/unit/test_docs.py` (a test fails when an option is missing here).",
        "Run `chatbot <command> --help` for the examples. Settings that are environment",
        "variables only are in the README's \"Configuration\" table.",
    ]
    for path, cmd in _commands():
        out += ["", f"## `{path}`", ""]
        summary = (cmd.help or "").strip().split("\n\n")[0]
        if summary:
            out += [_cell(summary), ""]
        options = _options(cmd)
        if not options:
            continue
        out += ["| option | meaning |", "| --- | --- |"]
        for option in options:
            names = ", ".join(f"`{o}`" for o in option.opts + option.secondary_opts)
            meaning = option.help or ""
            if isinstance(option.envvar, str):
                meaning += f" (env `{option.envvar}`)"
            out.append(f"| {names} | {_cell(meaning)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    CLI_DOC.write_text(cli_reference(), encoding="utf-8")
    print(f"wrote {CLI_DOC.relative_to(ROOT)}")
