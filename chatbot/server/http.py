"""HTTP side of the one-port server: the route table, responses, static files, headers.

How to add an endpoint (other modules do this; see ``ROUTE_MODULES`` in ``app.py``)::

    # chatbot/server/storefront.py
    def register(router: Router, app: ChatServer) -> None:
        router.add("/api/products", lambda req: json_response({"products": ...}))
        router.add_socket("/ws/agent", handle_agent)   # async def handle_agent(conn, app)

Handlers take an :class:`HttpRequest` and return a ``websockets`` ``Response`` (sync or
async); build it with :func:`json_response`, :func:`text_response` or
:func:`file_response`, which add the security headers. ``websockets`` only parses ``GET``
requests, so every route is a ``GET``. Paths are matched exactly first, then by the
longest registered prefix (``add_prefix``).
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

log = logging.getLogger(__name__)

# Pages may load scripts and styles only from this server, connect only back to it, and
# may not be framed. The widget builds its DOM with textContent, so inline styles set
# through the CSSOM are the only inline thing it needs ('unsafe-inline' for style only).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https:; connect-src 'self' ws: wss:; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
STATIC_TYPES = {".js", ".css", ".html", ".json", ".svg", ".png", ".ico", ".webp", ".txt", ".map"}


@dataclass(frozen=True)
class HttpRequest:
    """What a route handler sees of a request."""

    path: str
    query: dict[str, list[str]]
    headers: Headers
    remote_ip: str
    method: str = "GET"

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default


HttpHandler = Callable[[HttpRequest], "Response | Awaitable[Response]"]
SocketHandler = Callable[[Any], Awaitable[None]]


def make_request(raw_path: str, headers: Headers, remote_ip: str, method: str = "GET"
                 ) -> HttpRequest:
    parts = urlsplit(raw_path)
    return HttpRequest(parts.path or "/", parse_qs(parts.query), headers, remote_ip,
                       method.upper())


# Headers that must appear at most once: a request repeating one is answered 400
# (RFC 9110 section 5.3), before any handler or socket reads it (issue #18).
SINGLE_HEADERS = ("Host", "Origin", "Cookie", "Authorization", "Upgrade",
                  "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Content-Length")


def malformed_headers(headers: Headers) -> str | None:
    """Why the request's headers are unacceptable (a repeated single header), or None."""
    for name in SINGLE_HEADERS:
        if len(headers.get_all(name)) > 1:
            return f"repeated {name} header"
    return None


def response(
    status: int,
    body: bytes,
    content_type: str,
    *,
    headers: dict[str, str] | None = None,
    cache: str = "no-store",
) -> Response:
    """A response with the security headers (``headers`` override them)."""
    h = Headers()
    h["Content-Type"] = content_type
    if status != 204:  # a 204 must not carry Content-Length (RFC 9110 8.6)
        h["Content-Length"] = str(len(body))
    h["Cache-Control"] = cache
    for key, value in {**SECURITY_HEADERS, **(headers or {})}.items():
        h[key] = value
    return Response(status, HTTPStatus(status).phrase, h, body)


def text_response(status: int, text: str, **kw: Any) -> Response:
    return response(status, text.encode("utf-8"), "text/plain; charset=utf-8", **kw)


def json_response(data: Any, status: int = 200, **kw: Any) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return response(status, body, "application/json; charset=utf-8", **kw)


def file_response(root: Path, name: str, *, cross_origin: bool = False) -> Response:
    """Serve ``root/name`` if it is a regular file inside ``root`` with an allowed type."""
    base = root.resolve()
    try:
        path = (base / name).resolve()
    except (OSError, ValueError):
        return text_response(404, "not found")
    if (
        base not in path.parents
        or path.suffix.lower() not in STATIC_TYPES
        or not path.is_file()
        or any(part.startswith(".") for part in path.relative_to(base).parts)
    ):
        return text_response(404, "not found")
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        kind += "; charset=utf-8"
    extra = {}
    if cross_origin:
        # widget.js is embedded by other sites (the stores' pages).
        extra = {"Cross-Origin-Resource-Policy": "cross-origin", "Access-Control-Allow-Origin": "*"}
    return response(200, path.read_bytes(), kind, headers=extra, cache="public, max-age=300")


class Router:
    """Exact paths, prefixes and WebSocket paths of the server."""

    def __init__(self) -> None:
        self.routes: dict[str, HttpHandler] = {}
        self.prefixes: dict[str, HttpHandler] = {}
        self.sockets: dict[str, SocketHandler] = {}

    def add(self, path: str, handler: HttpHandler) -> None:
        """Route ``GET path`` to ``handler`` (a later registration replaces an earlier one)."""
        self.routes[path] = handler

    def add_prefix(self, prefix: str, handler: HttpHandler) -> None:
        """Route every path starting with ``prefix`` (e.g. ``/static/``) to ``handler``."""
        self.prefixes[prefix] = handler

    def add_socket(self, path: str, handler: SocketHandler) -> None:
        """Accept WebSocket upgrades at ``path``; ``handler(connection)`` runs the socket."""
        self.sockets[path] = handler

    def find(self, path: str) -> HttpHandler | None:
        handler = self.routes.get(path)
        if handler is not None:
            return handler
        for prefix in sorted(self.prefixes, key=len, reverse=True):
            if path.startswith(prefix):
                return self.prefixes[prefix]
        return None

    async def dispatch(self, request: HttpRequest) -> Response:
        """Run the handler for ``request``; unknown paths get 404, handler crashes 500."""
        handler = self.find(request.path)
        if handler is None:
            return text_response(404, "not found")
        try:
            result = handler(request)
            if isinstance(result, Response):
                return result
            return await result
        except Exception:
            log.exception("HTTP handler for %s failed", request.path)
            return text_response(500, "internal error")
