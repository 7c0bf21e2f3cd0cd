"""HMAC-SHA256 customer identity tokens, signed by the store's backend.

Format (compact, URL-safe, no padding)::

    token = b64url(payload) + "." + b64url(HMAC-SHA256(secret, b64url(payload)))
    payload = {"sub": "<customer id in the store>", "exp": <unix seconds>}

The MAC covers the encoded payload bytes exactly as sent, so there is no JSON
canonicalisation to get wrong, and it is checked with a constant-time compare before the
payload is even parsed. Any failure raises :class:`~chatbot.errors.IdentityError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from chatbot.errors import IdentityError

DEFAULT_TTL_S = 3600
# Tolerate a little clock skew between the store's backend and this server.
CLOCK_SKEW_S = 30
MAX_TOKEN_CHARS = 4096


@dataclass(frozen=True)
class Identity:
    """A verified claim: this connection is the store's customer ``customer``."""

    customer: str
    expires_at: int


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise IdentityError("identity token is not valid base64url") from exc


def _mac(secret: str, signed: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), signed.encode("ascii"), hashlib.sha256).digest()


def sign(
    secret: str, customer: str, *, ttl_s: int = DEFAULT_TTL_S, now: float | None = None
) -> str:
    """A token saying "this is ``customer``", valid for ``ttl_s`` seconds."""
    if not secret:
        raise IdentityError("the store has no identity secret")
    if not customer:
        raise IdentityError("customer id must not be empty")
    issued = int(time.time() if now is None else now)
    payload = json.dumps({"sub": customer, "exp": issued + int(ttl_s)}, separators=(",", ":"))
    body = _b64encode(payload.encode("utf-8"))
    return f"{body}.{_b64encode(_mac(secret, body))}"


def verify(secret: str, token: str, *, now: float | None = None) -> Identity:
    """Check ``token`` with ``secret``; raise ``IdentityError`` if forged, expired or malformed."""
    if not secret:
        raise IdentityError("the store has no identity secret")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise IdentityError("identity token is malformed")
    body, mac_text = token.split(".")
    if not body or not mac_text or not body.isascii() or not mac_text.isascii():
        raise IdentityError("identity token is malformed")
    # Compare MACs before looking at the payload: nothing unsigned is ever parsed.
    if not hmac.compare_digest(_mac(secret, body), _b64decode(mac_text)):
        raise IdentityError("identity token signature does not match")
    try:
        claims = json.loads(_b64decode(body))
    except ValueError as exc:
        raise IdentityError("identity token payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise IdentityError("identity token payload is not an object")
    customer, expires = claims.get("sub"), claims.get("exp")
    if not isinstance(customer, str) or not customer or type(expires) is not int:
        raise IdentityError("identity token needs 'sub' (string) and 'exp' (integer)")
    current = time.time() if now is None else now
    if expires + CLOCK_SKEW_S < current:
        raise IdentityError("identity token has expired")
    return Identity(customer=customer, expires_at=expires)
