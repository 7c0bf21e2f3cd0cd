"""``chatbot replay``: replay YAML transcripts against the bot and check every reply."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import TextIO

import click

from chatbot.replay.runner import TranscriptResult
from chatbot.settings import Settings

log = logging.getLogger(__name__)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--server",
    help="Replay against this running server (ws://host:port). Without it, a server "
    "with the real model starts in this process on a free port, over a throwaway copy "
    "of the stores the transcripts name.",
)
@click.option("--junit", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a JUnit XML report here.")
@click.option("--report", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the readable text report here (it is also printed).")
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Transcripts replayed at once (1 keeps replies byte-for-byte repeatable).")
@click.option("--reply-timeout", type=click.FloatRange(1), help="Seconds to wait for a reply.")
@click.option("--identity-secret",
              help="With --server: the store's identity secret, to sign customer identities "
              "(default: read from the database in --database-url).")
@click.option("--agent-email", help="With --server: the console account for agent steps.")
@click.option("--agent-password-file", type=click.File("r"),
              help="With --server: a file holding that account's password.")
@click.option("--index-cache", type=click.Path(path_type=Path, file_okay=False),
              help="In-process: keep search indexes here between runs "
              "(default: <data dir>/replay-index-cache).")
@click.option("-v", "--verbose", is_flag=True, help="Show every turn, not only failures.")
@click.pass_context
def replay(
    ctx: click.Context,
    paths: tuple[Path, ...],
    server: str | None,
    junit: Path | None,
    report: Path | None,
    concurrency: int,
    reply_timeout: float | None,
    identity_secret: str | None,
    agent_email: str | None,
    agent_password_file: TextIO | None,
    index_cache: Path | None,
    verbose: bool,
) -> None:
    """Replay transcripts (files or folders of *.yaml) and check the bot's replies.

    Each turn's reply is checked against its expectations (contains, cites, handoff,
    no_unsupported_claims, ...); failures print a diff of expected against actual with
    the reply text and its sources. Exits 1 when a transcript fails (xfail ones do not
    count). The format is documented in docs/transcripts.md.

    \b
    Examples:
      chatbot replay tests/transcripts
      chatbot replay tests/transcripts/orders --junit replay.xml --report replay.txt
      chatbot replay --server ws://127.0.0.1:8080 tests/transcripts/policies
      chatbot transcripts export --conversation c_8Jq2vYw1nK3xT0aB -o bug.yaml
    """
    from chatbot.replay import report as reports
    from chatbot.replay.format import load_paths
    from chatbot.replay.session import replay as run_replay

    settings: Settings = ctx.obj.settings
    transcripts = load_paths(paths)
    if not transcripts:
        raise click.UsageError("no transcripts found under the given paths")
    password = agent_password_file.read().strip() if agent_password_file else None
    cache = index_cache or settings.data_dir / "replay-index-cache"
    if not server:
        # The in-process server loads the real model: pull it first, as serve and ask do
        # (a custom --model path that holds no model still stops with ModelNotFoundError).
        from chatbot.engine.loader import ensure_model

        ensure_model(settings, progress=True)

    def progress(result: TranscriptResult) -> None:
        click.echo(f"{result.outcome.upper():8} {result.transcript.name}", err=True)

    results = asyncio.run(
        run_replay(
            transcripts,
            settings,
            concurrency=concurrency,
            on_result=progress,
            server_url=server,
            index_cache=None if server else cache,
            identity_secret=identity_secret,
            agent_email=agent_email,
            agent_password=password,
            reply_timeout_s=reply_timeout,
        )
    )
    text = reports.text_report(results, verbose=verbose)
    click.echo(text)
    if report:
        reports.write(report, text)
    if junit:
        reports.write(junit, reports.junit_xml(results))
    if not all(r.ok for r in results):
        sys.exit(1)
