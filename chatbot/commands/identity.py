"""``chatbot identity``: sign and check customer identity tokens for the widget."""

from __future__ import annotations

import datetime as dt

import click

from chatbot import identity as tokens
from chatbot.settings import Settings


def _store_secret(settings: Settings, store_name: str) -> str:
    from chatbot.storage.db import Database
    from knowledge_base.stores import get_store

    db = Database(settings.database_url)
    try:
        with db.session() as session:
            return get_store(session, store_name).identity_secret
    finally:
        db.dispose()


@click.group()
def identity() -> None:
    """Sign and check customer identity tokens (HMAC-SHA256 with the store's secret).

    A store's backend signs the logged-in customer's id and hands the token to the
    widget (``data-identity``); the bot then answers about that customer's orders.

    \b
    Examples:
      chatbot identity sign --store demo --customer harper_jackson_8530
      chatbot identity sign --store demo --customer harper_jackson_8530 --ttl 600
      chatbot identity verify --store demo TOKEN
    """


@identity.command()
@click.option("--store", "store_name", required=True, help="Store name or widget key.")
@click.option("--customer", required=True, help="The customer's id in the store (source id).")
@click.option(
    "--ttl",
    default=tokens.DEFAULT_TTL_S,
    show_default=True,
    type=click.IntRange(1),
    help="Seconds until the token expires.",
)
@click.pass_context
def sign(ctx: click.Context, store_name: str, customer: str, ttl: int) -> None:
    """Print a token for CUSTOMER of STORE, for testing the widget.

    \b
    Examples:
      chatbot identity sign --store demo --customer harper_jackson_8530
    """
    secret = _store_secret(ctx.obj.settings, store_name)
    click.echo(tokens.sign(secret, customer, ttl_s=ttl))


@identity.command()
@click.option("--store", "store_name", required=True, help="Store name or widget key.")
@click.argument("token")
@click.pass_context
def verify(ctx: click.Context, store_name: str, token: str) -> None:
    """Check TOKEN against the store's secret and print whom it names.

    \b
    Examples:
      chatbot identity verify --store demo eyJzdWIi...
    """
    secret = _store_secret(ctx.obj.settings, store_name)
    claim = tokens.verify(secret, token)
    expires = dt.datetime.fromtimestamp(claim.expires_at, dt.UTC).isoformat()
    click.echo(f"customer {claim.customer}, expires {expires}")
