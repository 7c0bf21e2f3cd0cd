"""The τ-bench retail format: a folder with users.json, orders.json, products.json, wiki.md.

Source ids are kept as they are (customer ids such as ``noah_brown_6181``, order numbers
such as ``#W2611340``, 10-digit product and item ids), so the ids in τ-bench tasks work
unchanged. The source has no dates, quantities, carriers or descriptions; we leave dates
empty and the carrier blank rather than invent them, merge repeated item lines into a
quantity, and build a plain description from the product name and its option values so
products are searchable.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from chatbot.errors import ImportFileError
from knowledge_base.importers.records import CENT, Checker, StoreData, check_unique

FILES = ("users.json", "orders.json", "products.json")
POLICY_FILE = "wiki.md"


def read(path: Path) -> StoreData:
    """Parse and validate a τ-bench retail folder; raises ImportFileError on any bad record."""
    folder = Path(path)
    if not folder.is_dir():
        raise ImportFileError(str(folder), "folder", "expected a folder with " + ", ".join(FILES))
    users = _load(folder / "users.json")
    orders = _load(folder / "orders.json")
    products = _load(folder / "products.json")
    data = StoreData(meta={"title": "τ-bench retail store"})
    data.products = [_product(folder / "products.json", k, v) for k, v in products.items()]
    variant_ids = {v["source_id"] for p in data.products for v in p["variants"]}
    data.customers = [_customer(folder / "users.json", k, v) for k, v in users.items()]
    customer_ids = {c["source_id"] for c in data.customers}
    data.orders = [
        _order(folder / "orders.json", k, v, customer_ids, variant_ids) for k, v in orders.items()
    ]
    # Keys are unique per file; item ids must also be unique across products.
    check_unique(str(folder / "products.json"), "variant",
                 [v["source_id"] for p in data.products for v in p["variants"]])
    wiki = folder / POLICY_FILE
    if wiki.exists():
        data.articles = policy_articles(wiki.read_text(encoding="utf-8"))
    return data


def _load(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportFileError(str(path), "file", "missing from the τ-bench folder") from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(str(path), "file", f"not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ImportFileError(str(path), f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise ImportFileError(str(path), "top level", "expected an object keyed by id")
    return raw


def _keyed(c: Checker, key: str, raw: Any, id_field: str) -> dict[str, Any]:
    rec = c.obj(raw, "the record")
    own = rec.get(id_field, key)
    if own != key:
        raise c.fail(f"{id_field} {own!r} does not match its key {key!r}")
    return rec


def _product(path: Path, key: str, raw: Any) -> dict[str, Any]:
    c = Checker(str(path), f"record {key}")
    rec = _keyed(c, key, raw, "product_id")
    name = c.text(rec, "name", required=True, max_len=300)
    variants_raw = c.obj(rec.get("variants"), "field 'variants'")
    if not variants_raw:
        raise c.fail("field 'variants' must not be empty")
    option_names: list[str] = []
    values: dict[str, list[str]] = {}
    variants = []
    for item_id, vraw in variants_raw.items():
        vc = Checker(str(path), f"record {key}, variant {item_id}")
        vrec = _keyed(vc, item_id, vraw, "item_id")
        options = vc.str_map(vrec, "options")
        for opt, val in options.items():
            if opt not in values:
                option_names.append(opt)
                values[opt] = []
            if val not in values[opt]:
                values[opt].append(val)
        variants.append(
            {
                "source_id": item_id,
                "sku": "",
                "title": " / ".join(options.values()),
                "options": options,
                "price": vc.money(vrec, "price", required=True),
                "compare_at_price": None,
                "available": vc.boolean(vrec, "available", default=True),
                "inventory": None,
            }
        )
    return {
        "source_id": key,
        "title": name,
        "description": describe(name, option_names, values),
        "product_type": name,
        "vendor": "",
        "tags": [],
        "url": "",
        "option_names": option_names,
        "variants": variants,
    }


def describe(name: str, option_names: list[str], values: dict[str, list[str]]) -> str:
    """A plain, factual description from what the source has: the name and option values."""
    parts = [f"{opt}: {', '.join(values[opt])}" for opt in option_names]
    if not parts:
        return f"{name}."
    return f"{name}, available with these options. " + "; ".join(parts) + "."


def _customer(path: Path, key: str, raw: Any) -> dict[str, Any]:
    c = Checker(str(path), f"record {key}")
    rec = _keyed(c, key, raw, "user_id")
    name = c.obj(rec.get("name", {}), "field 'name'")
    methods = c.obj(rec.get("payment_methods", {}), "field 'payment_methods'")
    for method_id, method in methods.items():
        if not isinstance(method, dict) or "source" not in method:
            raise c.fail(f"payment method {method_id!r} must be an object with a 'source'")
    return {
        "source_id": key,
        "email": c.text(rec, "email", required=True, max_len=300).lower(),
        "first_name": c.text(name, "first_name", max_len=100),
        "last_name": c.text(name, "last_name", max_len=100),
        "phone": "",
        "address": c.str_map(rec, "address"),
        # Kept as the source gives them (ids such as credit_card_7815826 are used in tasks).
        "payment_methods": [{"id": k, **v} for k, v in methods.items()],
        "created_at": None,
    }


def _order(path: Path, key: str, raw: Any, customers: set[str], variants: set[str]
           ) -> dict[str, Any]:
    c = Checker(str(path), f"record {key}")
    rec = _keyed(c, key, raw, "order_id")
    user = c.text(rec, "user_id", required=True)
    if user not in customers:
        raise c.fail(f"unknown user_id {user!r}")
    items_raw = rec.get("items")
    if not isinstance(items_raw, list) or not items_raw:
        raise c.fail("field 'items' must be a non-empty list")
    # No quantity in τ-bench: buying two of one item repeats the line. Merge the repeats.
    merged: dict[str, dict[str, Any]] = {}
    for n, iraw in enumerate(items_raw, start=1):
        ic = Checker(str(path), f"record {key}, item #{n}")
        item = ic.obj(iraw, "an item")
        item_id = ic.text(item, "item_id", required=True)
        if item_id not in variants:
            raise ic.fail(f"unknown item_id {item_id!r}")
        price = ic.money(item, "price", required=True)
        if item_id in merged:
            if merged[item_id]["unit_price"] != price:
                raise ic.fail(f"item {item_id} appears twice with different prices")
            merged[item_id]["quantity"] += 1
            continue
        merged[item_id] = {
            "product_source_id": ic.text(item, "product_id", required=True),
            "variant_source_id": item_id,
            "name": ic.text(item, "name", required=True, max_len=300),
            "options": ic.str_map(item, "options"),
            "quantity": 1,
            "unit_price": price,
        }
    items = list(merged.values())
    subtotal = sum((i["unit_price"] * i["quantity"] for i in items), Decimal(0)).quantize(CENT)
    return {
        "number": key,
        "customer": user,
        "status": c.text(rec, "status", required=True, max_len=50),
        "placed_at": None,
        "currency": "USD",
        "subtotal": subtotal,
        "shipping_cost": Decimal("0.00"),
        "total": subtotal,
        "email": "",
        "shipping_address": c.str_map(rec, "address"),
        "items": items,
        "shipments": _shipments(c, rec),
        "payments": _payments(c, rec),
        "returns": [],
    }


def _shipments(c: Checker, rec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    status = rec.get("status")
    for n, fraw in enumerate(rec.get("fulfillments") or [], start=1):
        f = c.obj(fraw, f"fulfillment #{n}")
        tracking = f.get("tracking_id") or []
        if not isinstance(tracking, list) or not all(isinstance(t, str) for t in tracking):
            raise c.fail(f"fulfillment #{n}: 'tracking_id' must be a list of strings")
        out.append(
            {
                "carrier": "",
                "tracking_number": tracking[0] if tracking else "",
                # The source only has the order status (cancelled orders keep their parcel).
                "status": {"delivered": "delivered", "cancelled": "cancelled"}.get(
                    str(status), "in_transit"
                ),
                "shipped_at": None,
                "estimated_delivery": None,
                "delivered_at": None,
                "item_ids": c.str_list(f, "item_ids"),
            }
        )
    return out


def _payments(c: Checker, rec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for n, praw in enumerate(rec.get("payment_history") or [], start=1):
        pc = Checker(c.path, f"{c.location}, payment #{n}")
        p = pc.obj(praw, "a payment")
        kind = pc.text(p, "transaction_type", required=True)
        if kind not in ("payment", "refund"):
            raise pc.fail(f"transaction_type must be payment or refund, got {kind!r}")
        out.append(
            {
                "kind": kind,
                "amount": pc.money(p, "amount", required=True),
                "method": pc.text(p, "payment_method_id", max_len=100),
                "created_at": None,
            }
        )
    return out


def policy_articles(markdown: str) -> list[dict[str, Any]]:
    """Split the policy wiki at its ``##`` headings into one policy article per section."""
    sections: list[tuple[str, list[str]]] = []
    title = ""
    lines: list[str] = []
    for line in markdown.splitlines():
        heading = re.match(r"^(#{1,2})\s+(.*\S)\s*$", line)
        if heading:
            if title or any(x.strip() for x in lines):
                sections.append((title, lines))
            title, lines = heading.group(2), []
        else:
            lines.append(line)
    if title or any(x.strip() for x in lines):
        sections.append((title, lines))
    articles = []
    slugs: Counter[str] = Counter()
    for title, body_lines in sections:
        body = "\n".join(body_lines).strip()
        if not body:
            continue
        title = title or "Policy"
        slug = "policy-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        slugs[slug] += 1
        if slugs[slug] > 1:
            slug = f"{slug}-{slugs[slug]}"
        articles.append(
            {"source_id": slug, "kind": "policy", "category": "policy", "title": title,
             "body": body, "url": ""}
        )
    return articles
