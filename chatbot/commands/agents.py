"""``chatbot agents``: manage the support team's console accounts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from chatbot.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

PASSWORD_ENV = "CHATBOT_AGENT_PASSWORD"

_PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input.",
)
_PASSWORD = click.option(
    "--password",
    envvar=PASSWORD_ENV,
    show_envvar=True,
    help=f"The password. Prefer ${PASSWORD_ENV} or --password-stdin: command-line "
    "arguments are visible to other users in the process list.",
)


@contextmanager
def _session(ctx: click.Context) -> Iterator[Session]:
    """One transaction on the configured database, which is closed afterwards."""
    from chatbot.storage.db import Database

    settings: Settings = ctx.obj.settings
    db = Database(settings.database_url)
    try:
        with db.transaction() as session:
            yield session
    finally:
        db.dispose()


def _read_password(password: str | None, from_stdin: bool) -> str:
    """The new password from --password/$CHATBOT_AGENT_PASSWORD, stdin, or a hidden prompt."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise click.UsageError("--password-stdin: standard input is empty")
        return line.rstrip("\r\n")
    if password:
        return password
    if not sys.stdin.isatty():
        raise click.UsageError(
            f"no password given: use --password-stdin, ${PASSWORD_ENV}, or run in a terminal"
        )
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group()
def agents() -> None:
    """Manage console accounts: who can log in to /console and for which stores.

    Passwords are hashed with argon2id; console sessions last 12 hours.

    \b
    Examples:
      chatbot agents add ana@shop.example --store demo
      echo 'a long passphrase' | chatbot agents add boss@shop.example --admin --password-stdin
      chatbot agents list
      chatbot agents passwd ana@shop.example
      chatbot agents remove ana@shop.example
    """


@agents.command("add")
@click.argument("email")
@click.option("--store", "stores", multiple=True, help="A store this agent works in (repeatable).")
@click.option("--admin", is_flag=True, help="Admins see every store and manage agents.")
@click.option("--name", default="", help="The name shown to colleagues and to shoppers.")
@_PASSWORD_STDIN
@_PASSWORD
@click.pass_context
def add(
    ctx: click.Context,
    email: str,
    stores: tuple[str, ...],
    admin: bool,
    name: str,
    password_stdin: bool,
    password: str | None,
) -> None:
    """Create an agent account.

    \b
    Examples:
      chatbot agents add ana@shop.example --store demo --name Ana
      CHATBOT_AGENT_PASSWORD=... chatbot agents add ops@shop.example --store demo --store tau
      echo 'a long passphrase' | chatbot agents add boss@shop.example --admin --password-stdin
    """
    from chatbot.agents.accounts import add_agent

    secret = _read_password(password, password_stdin)
    with _session(ctx) as session:
        agent = add_agent(session, email, secret, stores=stores, is_admin=admin, name=name)
        where = "every store (admin)" if admin else ", ".join(stores)
        click.echo(f"added {agent.email}: {where}")


@agents.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """List agents with their stores and last login.

    \b
    Examples:
      chatbot agents list
      chatbot agents list --json
    """
    from chatbot.agents.team import agent_rows

    with _session(ctx) as session:
        rows = agent_rows(session)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no agents yet: chatbot agents add EMAIL --store STORE")
        return
    width = max(len(str(r["email"])) for r in rows)
    for r in rows:
        stores = "* (admin)" if r["admin"] else ",".join(r["stores"]) or "-"  # type: ignore[arg-type]
        last = r["last_login"] or "never"
        click.echo(f"{r['email']:<{width}}  {stores:<24}  last login {last}")


@agents.command("remove")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def remove(ctx: click.Context, email: str, yes: bool) -> None:
    """Delete an agent; their open console sessions end at once.

    \b
    Examples:
      chatbot agents remove ana@shop.example --yes
    """
    from chatbot.agents.accounts import remove_agent

    if not yes and sys.stdin.isatty():
        click.confirm(f"Remove agent {email}?", abort=True)
    with _session(ctx) as session:
        remove_agent(session, email)
    click.echo(f"removed {email}")


@agents.command("passwd")
@click.argument("email")
@_PASSWORD_STDIN
@_PASSWORD
@click.pass_context
def passwd(ctx: click.Context, email: str, password_stdin: bool, password: str | None) -> None:
    """Set an agent's password; their open console sessions end.

    \b
    Examples:
      chatbot agents passwd ana@shop.example
      echo 'a new long passphrase' | chatbot agents passwd ana@shop.example --password-stdin
    """
    from chatbot.agents.accounts import set_password

    secret = _read_password(password, password_stdin)
    with _session(ctx) as session:
        set_password(session, email, secret)
    click.echo(f"password changed for {email}; their sessions were ended")


@agents.command("grant")
@click.argument("email")
@click.option("--store", "stores", multiple=True, required=True, help="Store to add (repeatable).")
@click.pass_context
def grant(ctx: click.Context, email: str, stores: tuple[str, ...]) -> None:
    """Give an agent access to more stores.

    \b
    Examples:
      chatbot agents grant ana@shop.example --store tau
    """
    from chatbot.agents.accounts import grant_stores

    with _session(ctx) as session:
        grant_stores(session, email, stores)
    click.echo(f"{email} now works in {', '.join(stores)}")


@agents.command("revoke")
@click.argument("email")
@click.option("--store", "stores", multiple=True, required=True, help="Store to drop (repeatable).")
@click.pass_context
def revoke(ctx: click.Context, email: str, stores: tuple[str, ...]) -> None:
    """Take away an agent's access to some stores (effective on their next action).

    \b
    Examples:
      chatbot agents revoke ana@shop.example --store tau
    """
    from chatbot.agents.accounts import revoke_stores

    with _session(ctx) as session:
        revoke_stores(session, email, stores)
    click.echo(f"{email} no longer works in {', '.join(stores)}")
