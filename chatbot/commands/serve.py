"""``chatbot serve``: run the chat server (widget socket, console, health, metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import click

from chatbot.settings import Settings

log = logging.getLogger(__name__)


@click.command()
@click.option("--host", help="Interface to listen on (default: $CHATBOT_HOST or 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port (default: $CHATBOT_PORT or 8080)."
)
@click.option(
    "--demo",
    is_flag=True,
    help="Import the demo store and pull the model first when they are missing.",
)
@click.option(
    "--drain",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds replies in flight may take to finish on shutdown before they are "
    "stored as interrupted.",
)
@click.option(
    "--poll-events",
    type=click.FloatRange(0.05),
    help="Run several server processes on one database: every SECONDS, pick up events "
    "other processes wrote for the conversations open here (e.g. 0.5).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    demo: bool,
    drain: float,
    poll_events: float | None,
) -> None:
    """Serve the shopper widget, the agent console and the chat sockets on one port.

    The server answers /healthz at once and /readyz once the model is loaded.
    SIGTERM or Ctrl-C stops it gracefully: no new connections, replies in flight
    finish (up to --drain seconds) or are stored as interrupted, sockets close
    with code 1001.

    \b
    Examples:
      chatbot serve --demo
      chatbot serve --host 0.0.0.0 --port 8080
      chatbot serve --port 8081 --poll-events 0.5   # a second process, same database
      CHATBOT_DATABASE_URL=postgresql+psycopg://chat@db/chat chatbot serve
    """
    settings: Settings = ctx.obj.settings.replace(host=host, port=port)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # websockets logs every HTTP request (health checks, metrics scrapes) at INFO.
        logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(run_server(settings, demo=demo, drain_s=drain, poll_s=poll_events))


async def run_server(
    settings: Settings, *, demo: bool, drain_s: float, poll_s: float | None = None
) -> None:
    """Start the server, load the answerer in the background, stop on SIGTERM/SIGINT."""
    from chatbot.security.files import UMASK, private_database, private_dir
    from chatbot.server.app import ChatServer
    from chatbot.storage.db import Database

    # Issue #18: what the server creates is private (umask 077), the data directory is
    # 0700 and the database files 0600, also when an older version created them 0755/0644.
    os.umask(UMASK)
    private_dir(settings.data_dir)
    private_database(settings.database_url)
    db = await asyncio.to_thread(Database, settings.database_url)
    demo_store_id: int | None = None
    if demo:
        from knowledge_base.demo import ensure_demo_store

        store = await asyncio.to_thread(ensure_demo_store, db)
        demo_store_id = store.id
        await asyncio.to_thread(_ensure_demo_login, settings, db, store.name)
    app = ChatServer(settings, db, answerer=None, poll_interval_s=poll_s)
    port = await app.start()
    base = f"http://{_display_host(settings.host)}:{port}"
    log.info("demo storefront: %s/demo  (widget key 'demo')", base)
    log.info("agent console:   %s/console", base)
    log.info(
        "widget script:   %s/widget.js   health: %s/healthz   metrics: %s/metrics", base, base, base
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    answerer: Any = None
    loader = asyncio.create_task(_load_answerer(settings, db, demo, demo_store_id))
    try:
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({loader, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if loader.done():
            answerer = loader.result()  # raises the loading error: stops the server
            app.set_answerer(answerer)
            log.info("answerer ready; %s/readyz is 200", base)
            await waiter
        else:
            loader.cancel()
    finally:
        log.info("shutting down (drain %.1fs)", drain_s)
        await app.stop(drain_s=drain_s)
        if answerer is not None and hasattr(answerer, "close"):
            await answerer.close()
        db.dispose()


def _ensure_demo_login(settings: Settings, db: Any, store_name: str) -> None:
    """Give the demo a console account; its password is kept in a 0600 file in the data dir."""
    from chatbot.agents.accounts import DEMO_AGENT_EMAIL, ensure_demo_agent
    from chatbot.storage.db import transaction

    with transaction(db.sessions) as session:
        password = ensure_demo_agent(session, store_name)
    from chatbot.security.files import private_file, write_private

    login_file = settings.data_dir / "demo-console-login.txt"
    if password is not None:
        write_private(login_file, f"{DEMO_AGENT_EMAIL}\n{password}\n")
    if login_file.exists():
        # The password stays in the 0600 file; the log only says where it is (issue #18).
        private_file(login_file)
        log.info("console login:   %s  (password in %s)", DEMO_AGENT_EMAIL, login_file)
    else:
        log.info("console login:   %s (reset with: chatbot agents passwd %s)",
                 DEMO_AGENT_EMAIL, DEMO_AGENT_EMAIL)


async def _load_answerer(settings: Settings, db: Any, demo: bool, demo_store_id: int | None) -> Any:
    if settings.fake_answerer:
        from chatbot.fake_answerer import FakeAnswerer

        log.warning("CHATBOT_FAKE_ANSWERER is set: placeholder echo replies, no model (tests)")
        return FakeAnswerer.from_spec(settings.fake_answerer)
    from chatbot.answering import build_answerer

    if demo:
        from chatbot.engine.loader import ensure_model

        await asyncio.to_thread(ensure_model, settings, True)
    build: Any = build_answerer  # lazily exported by chatbot.answering
    answerer: Any = await asyncio.to_thread(build, settings, db)
    if demo_store_id is not None and hasattr(answerer, "prepare"):
        # Build the demo store's search index now rather than on the first question.
        await asyncio.to_thread(answerer.prepare, demo_store_id, progress=True)
    if hasattr(answerer, "start"):
        await answerer.start()
    return answerer


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
