"""Identity tokens: round trip, forgery, expiry, malformed input never crashes."""

from __future__ import annotations

import base64

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from chatbot import identity
from chatbot.errors import IdentityError

SECRET = "s3cret-key-for-tests"
NOW = 1_800_000_000


def test_round_trip() -> None:
    token = identity.sign(SECRET, "cust_42", ttl_s=60, now=NOW)
    claim = identity.verify(SECRET, token, now=NOW + 59)
    assert claim.customer == "cust_42"
    assert claim.expires_at == NOW + 60


def test_expired_token_is_refused() -> None:
    token = identity.sign(SECRET, "cust_42", ttl_s=60, now=NOW)
    with pytest.raises(IdentityError, match="expired"):
        identity.verify(SECRET, token, now=NOW + 60 + identity.CLOCK_SKEW_S + 1)


def test_other_stores_secret_is_refused() -> None:
    token = identity.sign("another-store-secret", "cust_42", now=NOW)
    with pytest.raises(IdentityError, match="signature"):
        identity.verify(SECRET, token, now=NOW)


def test_edited_payload_is_refused() -> None:
    token = identity.sign(SECRET, "cust_42", ttl_s=60, now=NOW)
    body, mac = token.split(".")
    forged = base64.urlsafe_b64encode(b'{"sub":"cust_1","exp":9999999999}').rstrip(b"=")
    with pytest.raises(IdentityError):
        identity.verify(SECRET, f"{forged.decode()}.{mac}", now=NOW)
    # Flipping one character of the MAC is caught too.
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    with pytest.raises(IdentityError):
        identity.verify(SECRET, f"{body}.{flipped}", now=NOW)


@pytest.mark.parametrize(
    "token", ["", ".", "abc", "a.b.c", "é.é", "!!!.???", "x" * 5000, "eyJ9.", ".eyJ9"]
)
def test_malformed_tokens_raise_identity_error(token: str) -> None:
    with pytest.raises(IdentityError):
        identity.verify(SECRET, token, now=NOW)


def test_signed_but_wrong_claims_are_refused() -> None:
    body = base64.urlsafe_b64encode(b'{"sub":42,"exp":"soon"}').rstrip(b"=").decode()
    token = f"{body}.{identity._b64encode(identity._mac(SECRET, body))}"
    with pytest.raises(IdentityError, match="'sub'"):
        identity.verify(SECRET, token, now=NOW)


@given(st.text(max_size=200))
def test_random_text_never_crashes(token: str) -> None:
    with pytest.raises(IdentityError):
        identity.verify(SECRET, token, now=NOW)


def test_cli_sign_then_verify(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from chatbot.cli import cli
    from chatbot.storage.db import Database
    from knowledge_base.stores import get_or_create_store

    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    with db.transaction() as session:
        secret = get_or_create_store(session, "shop").identity_secret
    db.dispose()
    runner = CliRunner()
    args = ["--data-dir", str(tmp_path), "--database-url", f"sqlite:///{tmp_path / 'c.db'}"]
    out = runner.invoke(cli, [*args, "identity", "sign", "--store", "shop", "--customer", "c1"])
    assert out.exit_code == 0, out.output
    token = out.output.strip()
    assert identity.verify(secret, token).customer == "c1"
    checked = runner.invoke(cli, [*args, "identity", "verify", "--store", "shop", token])
    assert checked.exit_code == 0 and "customer c1" in checked.output
    bad = runner.invoke(cli, [*args, "identity", "verify", "--store", "shop", token + "x"])
    assert bad.exit_code != 0 and "signature" in bad.output
