"""The demo storefront's product API: ``GET /demo/api/products`` (JSON, read-only).

The demo page (``web_widget/demo.html`` + ``demo.js``) lists a store's catalogue from this
endpoint and puts the chat widget beside it. Catalogues are public on any storefront, so
the endpoint needs no login; it only ever reads products and their variants, for one
store chosen by its public widget key (``store``, default ``demo``).

The response body is JSON with ``<``, ``>`` and ``&`` escaped as ``\\u003c`` etc., so no
product text can ever be read as markup, even if someone pastes the body into a page;
the page itself renders every field with ``textContent``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from chatbot.errors import ChatbotError, StoreNotFoundError
from chatbot.storage.db import Database
from knowledge_base.models import Product, Store
from knowledge_base.stores import find_store

if TYPE_CHECKING:
    from websockets.http11 import Response

    from chatbot.server.app import ChatServer
    from chatbot.server.http import HttpRequest, Router

log = logging.getLogger(__name__)

PRODUCTS_PATH = "/demo/api/products"
DEFAULT_LIMIT = 24
MAX_LIMIT = 60
MAX_QUERY_CHARS = 100
# Escapes that keep JSON valid while making it inert as HTML.
_HTML_SAFE = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


class BadQueryError(ChatbotError):
    """A query-string parameter of the product API is out of range."""

    code = "bad_query"


@dataclass(frozen=True)
class ProductQuery:
    """The checked query string of ``GET /demo/api/products``."""

    store: str = "demo"
    q: str = ""
    type: str = ""
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> ProductQuery:
        """Check the raw query parameters; raises ``BadQueryError`` naming the bad one."""
        store = params.get("store", "demo").strip() or "demo"
        q = params.get("q", "").strip()
        kind = params.get("type", "").strip()
        for name, value in (("store", store), ("q", q), ("type", kind)):
            if len(value) > MAX_QUERY_CHARS:
                raise BadQueryError(f"'{name}' must be at most {MAX_QUERY_CHARS} characters")
        return cls(
            store=store,
            q=q,
            type=kind,
            limit=_int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            offset=_int_param(params, "offset", 0, 0, 100_000),
        )


def _int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise BadQueryError(f"'{name}' must be an integer from {lo} to {hi}")
    return int(raw)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _product_json(p: Product) -> dict[str, Any]:
    variants = p.variants
    prices = [v.price for v in variants]
    compare = [v.compare_at_price for v in variants if v.compare_at_price is not None]
    colours: list[str] = []
    for v in variants:
        colour = next(
            (val for key, val in v.options.items() if key.lower() in ("color", "colour")), None
        )
        if colour and colour not in colours:
            colours.append(colour)
    return {
        "id": p.source_id,
        "title": p.title,
        "type": p.product_type,
        "vendor": p.vendor,
        "description": p.description[:280],
        "url": p.url,
        "tags": list(p.tags or [])[:8],
        "price": _money(min(prices)) if prices else None,
        "compare_at": _money(max(compare)) if compare else None,
        "available": any(v.available for v in variants),
        "colors": colours[:6],
        "variants": len(variants),
    }


def list_products(session: Session, query: ProductQuery) -> dict[str, Any]:
    """One page of a store's catalogue, with the product types to filter by."""
    store: Store | None = find_store(session, query.store)
    if store is None:
        raise StoreNotFoundError(f"unknown store {query.store!r}")
    where = [Product.store_id == store.id]
    if query.type:
        where.append(Product.product_type == query.type)
    if query.q:
        # LIKE wildcards typed by a shopper are matched literally.
        escaped = query.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        needle = f"%{escaped}%"
        where.append(
            or_(
                func.lower(Product.title).like(needle, escape="\\"),
                func.lower(Product.product_type).like(needle, escape="\\"),
                func.lower(Product.description).like(needle, escape="\\"),
            )
        )
    total = session.scalar(select(func.count()).select_from(Product).where(*where)) or 0
    rows = session.scalars(
        select(Product)
        .where(*where)
        .options(selectinload(Product.variants))
        .order_by(Product.id)
        .limit(query.limit)
        .offset(query.offset)
    ).all()
    types = session.scalars(
        select(Product.product_type)
        .where(Product.store_id == store.id, Product.product_type != "")
        .group_by(Product.product_type)
        .order_by(func.count().desc(), Product.product_type)
    ).all()
    return {
        "store": {
            "key": store.widget_key,
            "title": store.title or store.name,
            "currency": store.currency,
        },
        "total": total,
        "offset": query.offset,
        "limit": query.limit,
        "types": list(types),
        "products": [_product_json(p) for p in rows],
    }


def dumps_safe(payload: Any) -> bytes:
    """JSON bytes with ``<``, ``>`` and ``&`` escaped (still valid, equal JSON)."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return text.translate(_HTML_SAFE).encode()


def products_response(db: Database, params: Mapping[str, str]) -> tuple[int, bytes]:
    """Status code and JSON body for ``GET /demo/api/products?store=&q=&type=&limit=&offset=``.

    Errors are JSON too: ``{"error": {"code": ..., "message": ...}}`` with 400 or 404.
    """
    try:
        query = ProductQuery.parse(params)
        with db.session() as session:
            return 200, dumps_safe(list_products(session, query))
    except BadQueryError as exc:
        return 400, dumps_safe({"error": {"code": exc.code, "message": exc.message}})
    except StoreNotFoundError as exc:
        return 404, dumps_safe({"error": {"code": exc.code, "message": exc.message}})


def register(router: Router, app: ChatServer) -> None:
    """Add ``GET /demo/api/products`` to the server's route table."""
    from chatbot.server.http import response

    async def products(request: HttpRequest) -> Response:
        params = {name: values[0] for name, values in request.query.items() if values}
        # The query runs in a worker thread so a slow database never stalls the sockets.
        status, body = await asyncio.to_thread(products_response, app.db, params)
        return response(status, body, "application/json; charset=utf-8", cache="public, max-age=60")

    router.add(PRODUCTS_PATH, products)
