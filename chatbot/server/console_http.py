"""Console HTTP endpoints: login, logout and "who am I", with an HttpOnly session cookie.

``websockets`` serves HTTP only as far as a WebSocket handshake needs it: requests may not
carry a body. So the login sends the credentials the standard HTTP way, in an
``Authorization: Basic`` header (RFC 7617, UTF-8) of a body-less ``POST /console/login``;
they never appear in a URL, a log line or a body a proxy might store. The answer sets
the session cookie: ``HttpOnly`` (page scripts cannot read it), ``SameSite=Strict`` (no
cross-site request carries it) and ``Secure`` when the console is served over HTTPS.

Cross-site login attempts cannot forge the header: a custom ``Authorization`` header
needs a CORS preflight, which this server never grants.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from datetime import UTC
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session
from websockets.datastructures import Headers
from websockets.http11 import Response

from chatbot.agents import sessions
from chatbot.agents.authz import Principal
from chatbot.errors import AuthError
from chatbot.server.http import HttpRequest, json_response
from chatbot.server.limits import KeyedRateLimiter

if TYPE_CHECKING:
    from chatbot.server.app import ChatServer

log = logging.getLogger(__name__)

COOKIE_NAME = "chatbot_console"
LOGIN_PATH = "/console/login"
LOGOUT_PATH = "/console/logout"
SESSION_PATH = "/console/session"
# Login attempts per minute: per client IP, and per email (slows password guessing on one
# account from many IPs). Counted before the password check, so a flood costs no argon2.
LOGIN_PER_IP_PER_MIN = 20
LOGIN_PER_EMAIL_PER_MIN = 10
_MAX_AUTH_HEADER = 4096


def session_token(headers: Headers) -> str | None:
    """The console session token from the request's ``Cookie`` header, if any."""
    for raw in headers.get_all("Cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            continue
        morsel = jar.get(COOKIE_NAME)
        if morsel is not None and morsel.value:
            return morsel.value
    return None


def is_https(headers: Headers) -> bool:
    """Whether the browser reached us over HTTPS (directly or through a TLS proxy)."""
    proto = headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https" or headers.get("Origin", "").lower().startswith("https://")


def session_cookie(token: str, max_age: int, *, secure: bool) -> str:
    """The ``Set-Cookie`` value for a console session (``max_age`` 0 deletes it)."""
    parts = [f"{COOKIE_NAME}={token}", "Path=/", f"Max-Age={max_age}", "HttpOnly",
             "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def basic_credentials(headers: Headers) -> tuple[str, str] | None:
    """``(email, password)`` from ``Authorization: Basic``, or None when absent/garbled."""
    value = headers.get("Authorization", "")
    if len(value) > _MAX_AUTH_HEADER:
        return None
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    email, sep, password = decoded.partition(":")
    return (email, password) if sep else None


def agent_json(principal: Principal) -> dict[str, Any]:
    return {"id": principal.agent_id, "email": principal.email, "name": principal.name,
            "admin": principal.is_admin}


def _error(status: int, code: str, message: str, **kw: Any) -> Response:
    return json_response({"error": code, "message": message}, status, **kw)


class ConsoleHttp:
    """The console's HTTP handlers, bound to one server."""

    def __init__(self, app: ChatServer) -> None:
        self.app = app
        self.per_ip = KeyedRateLimiter(LOGIN_PER_IP_PER_MIN)
        self.per_email = KeyedRateLimiter(LOGIN_PER_EMAIL_PER_MIN)

    def register(self, router: Any) -> None:
        router.add(LOGIN_PATH, self.login)
        router.add(LOGOUT_PATH, self.logout)
        router.add(SESSION_PATH, self.session)

    async def _run(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await self.app.conversations.run(fn, *args, **kw)

    async def login(self, req: HttpRequest) -> Response:
        """``POST /console/login`` with ``Authorization: Basic``: open a session, set the cookie."""
        creds = basic_credentials(req.headers)
        if creds is None:
            return _error(400, "bad_request",
                          "send POST /console/login with an 'Authorization: Basic' header")
        email, password = creds
        if not self.per_ip.allow(req.remote_ip) or not self.per_email.allow(email.strip().lower()):
            return _error(429, "rate_limited", "too many sign-in attempts; wait a minute",
                          headers={"Retry-After": "60"})
        try:
            result = await self._run(
                sessions.login, email, password,
                user_agent=req.headers.get("User-Agent", ""), ip=req.remote_ip,
            )
        except AuthError as exc:
            return _error(401, exc.code, "Wrong email or password.")
        principal = Principal.of(result.agent)
        max_age = int(sessions.DEFAULT_TTL.total_seconds())
        cookie = session_cookie(result.token, max_age, secure=is_https(req.headers))
        expires = result.expires_at.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        return json_response({"agent": agent_json(principal), "expires_at": expires},
                             headers={"Set-Cookie": cookie})

    async def logout(self, req: HttpRequest) -> Response:
        """``POST /console/logout``: end the session and clear the cookie."""
        token = session_token(req.headers)
        ended = await self._run(sessions.logout, token) if token else False
        cookie = session_cookie("", 0, secure=is_https(req.headers))
        return json_response({"logged_out": bool(ended)}, headers={"Set-Cookie": cookie})

    async def session(self, req: HttpRequest) -> Response:
        """``GET /console/session``: who the cookie belongs to (401 when nobody)."""
        token = session_token(req.headers)

        def who(session: Session) -> dict[str, Any]:
            return agent_json(Principal.of(sessions.authenticate(session, token)))

        try:
            return json_response({"agent": await self._run(who)})
        except AuthError as exc:
            return _error(401, exc.code, exc.message)
