"""``chatbot transcripts``: turn stored conversations into replayable transcripts."""

from __future__ import annotations

from pathlib import Path

import click

from chatbot.settings import Settings


@click.group()
def transcripts() -> None:
    """Make regression tests from real conversations (see docs/transcripts.md).

    \b
    Examples:
      chatbot transcripts export --conversation c_8Jq2vYw1nK3xT0aB
      chatbot transcripts export --conversation c_8Jq2vYw1nK3xT0aB -o tests/transcripts/bug.yaml
    """


@transcripts.command("export")
@click.option("--conversation", "conversation_id", required=True,
              help="The conversation's public id (shown in the agent console, e.g. c_8Jq2...).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the YAML here (default: print it).")
@click.pass_context
def export_command(ctx: click.Context, conversation_id: str, output: Path | None) -> None:
    """Export a stored conversation as a transcript with the facts its replies relied on.

    Each shopper message becomes a turn whose checks pin the recorded reply: the sources
    it cited, the order numbers, tracking numbers, prices and dates it stated that those
    sources back, its handoff, and no unsupported claims. Agent takeovers and messages
    become agent steps. Replay it with 'chatbot replay FILE'.

    \b
    Examples:
      chatbot transcripts export --conversation c_8Jq2vYw1nK3xT0aB -o bug.yaml
      chatbot replay bug.yaml
    """
    from chatbot.replay.recorder import export_conversation
    from chatbot.storage.db import Database

    settings: Settings = ctx.obj.settings
    db = Database(settings.database_url, run_migrations=False)
    try:
        recording = export_conversation(db, conversation_id, path=output)
    finally:
        db.dispose()
    text = recording.yaml()
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from exc
    click.echo(f"wrote {output} ({len(recording.transcript.steps)} steps)", err=True)
    for note in recording.notes:
        click.echo(f"note: {note}", err=True)
