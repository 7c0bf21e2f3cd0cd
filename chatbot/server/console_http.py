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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

from chatbot.agents import sessions
from chatbot.agents.services import TeamService
from chatbot.errors import AuthError
from chatbot.protocol.common import ErrorCode
from chatbot.security import counters
from chatbot.security.login import Busy, PasswordChecks, login_keys
from chatbot.security.throttle import Refusal
from chatbot.server.http import HttpRequest, json_response
from chatbot.server.limits import KeyedRateLimiter
from chatbot.storage.db import thread_runner

if TYPE_CHECKING:
    from chatbot.server.app import ChatServer

log = logging.getLogger(__name__)

COOKIE_NAME = "chatbot_console"
LOGIN_PATH = "/console/login"
LOGOUT_PATH = "/console/logout"
SESSION_PATH = "/console/session"
# Login attempts per minute per client IP, counted before the password check, so a flood
# costs no argon2. Failures are then throttled per (account, address) in the database with
# backoff (chatbot/security/login.py), never per account alone: failing logins in an
# agent's name from elsewhere cannot lock the agent out (issue #18).
LOGIN_PER_IP_PER_MIN = 20
# A loose per-account rate over all addresses (distributed guessing); far above what a
# person types, and it delays nobody's correct password for long.
LOGIN_PER_EMAIL_PER_MIN = 60
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


def same_origin(headers: Headers) -> bool:
    """The request comes from the console's own origin, or from no browser at all.

    Browsers send ``Origin`` on every POST (``no-cors`` included) and on WebSocket
    upgrades; scripts send none. Scheme-less comparison of host *and port*, so another
    port of the same site is another origin.
    """
    origin = headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == headers.get("Host", "").lower()


def _error(status: int, code: str, message: str, **kw: Any) -> Response:
    return json_response({"error": code, "message": message}, status, **kw)


class ConsoleHttp:
    """The console's HTTP handlers, bound to one server."""

    def __init__(self, app: ChatServer, on_logout: Callable[[str], Any] | None = None) -> None:
        self.app = app
        self.per_ip = KeyedRateLimiter(LOGIN_PER_IP_PER_MIN)
        self.per_email = KeyedRateLimiter(LOGIN_PER_EMAIL_PER_MIN)
        # argon2 runs here, not on the database thread (issue #18).
        self.checks = PasswordChecks()
        # The login's read-only check runs here: it never queues behind (or in front of)
        # the chat's writes on the database thread (SQLite WAL readers never block).
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatbot-auth-read")
        self.team = TeamService(app.conversations.run, read=thread_runner(app.db, self.reader))
        # Called with the token of an ended session: closes its sockets at once.
        self.on_logout = on_logout

    def register(self, router: Any) -> None:
        router.add(LOGIN_PATH, self.login)
        router.add(LOGOUT_PATH, self.logout)
        router.add(SESSION_PATH, self.session)

    async def login(self, req: HttpRequest) -> Response:
        """``POST /console/login`` with ``Authorization: Basic``: open a session, set the cookie."""
        creds = basic_credentials(req.headers)
        if creds is None:
            return _error(400, "bad_request",
                          "send POST /console/login with an 'Authorization: Basic' header")
        if req.method != "POST":
            return _error(405, ErrorCode.METHOD_NOT_ALLOWED, "use POST", headers={"Allow": "POST"})
        if not same_origin(req.headers):
            return _error(403, ErrorCode.FORBIDDEN, "cross-site sign-in is refused")
        email, password = creds
        if not self.per_ip.allow(req.remote_ip) or not self.per_email.allow(email.strip().lower()):
            counters.CONSOLE_LOGINS.inc(1, "rate_limited")
            return _error(429, "rate_limited", "too many sign-in attempts; wait a minute",
                          headers={"Retry-After": "60"})
        keys = login_keys(email, req.remote_ip)
        try:
            async with self.checks.slot():
                creds_row = await self.team.login_check(email, keys)
                if isinstance(creds_row, Refusal):
                    counters.CONSOLE_LOGINS.inc(1, "locked")
                    return _error(429, "rate_limited", "too many failed sign-ins; wait a while",
                                  headers={"Retry-After": str(creds_row.retry_after_s)})
                ok, new_hash = await self.checks.verify(creds_row.password_hash, password)
                ok = ok and creds_row.agent_id is not None and creds_row.active
                # One write on the database thread: a failure counted, or the session.
                result = await self.team.finish_login(
                    keys, creds_row.agent_id if ok else None, new_hash,
                    user_agent=req.headers.get("User-Agent", ""), ip=req.remote_ip,
                )
        except Busy:
            counters.CONSOLE_LOGINS.inc(1, "busy")
            return _error(503, ErrorCode.BUSY, "the server is busy; try again in a few seconds",
                          headers={"Retry-After": "5"})
        if result is None:
            counters.CONSOLE_LOGINS.inc(1, "failed")
            log.info("failed console login (%s) from %s",
                     f"agent {creds_row.agent_id}" if creds_row.agent_id else "unknown account",
                     req.remote_ip)
            return _error(401, "invalid_credentials", "Wrong email or password.")
        counters.CONSOLE_LOGINS.inc(1, "ok")
        opened, principal = result
        max_age = int(sessions.DEFAULT_TTL.total_seconds())
        cookie = session_cookie(opened.token, max_age, secure=is_https(req.headers))
        expires = opened.expires_at.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        return json_response({"agent": principal.as_json(), "expires_at": expires},
                             headers={"Set-Cookie": cookie})

    async def logout(self, req: HttpRequest) -> Response:
        """``POST /console/logout``: end the session, clear the cookie, close its sockets.

        POST only, and only from the console's own origin (issue #18: a page on another
        port of the same site logged agents out with a no-cors POST, or a plain GET).
        """
        if req.method != "POST":
            return _error(405, ErrorCode.METHOD_NOT_ALLOWED, "use POST", headers={"Allow": "POST"})
        if not same_origin(req.headers):
            return _error(403, ErrorCode.FORBIDDEN, "cross-site logout is refused")
        token = session_token(req.headers)
        ended = await self.team.logout(token) if token else False
        if token and self.on_logout is not None:
            await self.on_logout(token)
        cookie = session_cookie("", 0, secure=is_https(req.headers))
        return json_response({"logged_out": bool(ended)}, headers={"Set-Cookie": cookie})

    async def session(self, req: HttpRequest) -> Response:
        """``GET /console/session``: who the cookie belongs to (401 when nobody)."""
        token = session_token(req.headers)
        try:
            return json_response({"agent": (await self.team.authorize(token)).as_json()})
        except AuthError as exc:
            return _error(401, exc.code, exc.message)
