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
# τ-bench's retail policy (wiki.md): "authenticate the user identity by locating their user
# id via email, or via name + zip code". Imported as the store's ``identify_by`` where the
# store has none yet (``chatbot actions config --identify-by`` changes it).
IDENTIFY_BY = ["email", "name_zip"]


def read(path: Path) -> StoreData:
    """Parse and validate a τ-bench retail folder; raises ImportFileError on any bad record."""
    folder = Path(path)
    if not folder.is_dir():
        raise ImportFileError(str(folder), "folder", "expected a folder with " + ", ".join(FILES))
    users = _load(folder / "users.json")
    orders = _load(folder / "orders.json")
    products = _load(folder / "products.json")
    data = StoreData(meta={"title": "τ-bench retail store",
                           "setting_defaults": {"identify_by": list(IDENTIFY_BY)}})
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
    # Each merged line remembers the positions of its units, so the export puts them back.
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
            merged[item_id]["positions"].append(n - 1)
            continue
        merged[item_id] = {
            "product_source_id": ic.text(item, "product_id", required=True),
            "variant_source_id": item_id,
            "name": ic.text(item, "name", required=True, max_len=300),
            "options": ic.str_map(item, "options"),
            "quantity": 1,
            "unit_price": price,
            "positions": [n - 1],
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
        "cancel_reason": c.text(rec, "cancel_reason", max_len=100) or None,
        "items": items,
        "shipments": _shipments(c, rec),
        "payments": _payments(c, rec),
        "returns": _returns(c, rec, variants),
    }


def _returns(c: Checker, rec: dict[str, Any], variants: set[str]) -> list[dict[str, Any]]:
    """The fields τ-bench's return and exchange tools write, as return rows."""
    out: list[dict[str, Any]] = []
    if "return_items" in rec:
        out.append({
            "status": "requested", "kind": "return", "reason": "",
            "item_ids": _known_items(c, rec, "return_items", variants),
            "requested_at": None, "refund_amount": None, "new_item_ids": [],
            "payment_method": c.text(rec, "return_payment_method_id", max_len=100),
            "price_difference": None,
        })
    if "exchange_items" in rec:
        out.append({
            "status": "requested", "kind": "exchange", "reason": "",
            "item_ids": _known_items(c, rec, "exchange_items", variants),
            "requested_at": None, "refund_amount": None,
            "new_item_ids": _known_items(c, rec, "exchange_new_items", variants),
            "payment_method": c.text(rec, "exchange_payment_method_id", max_len=100),
            "price_difference": c.signed_money(rec, "exchange_price_difference"),
        })
    return out


def _known_items(c: Checker, rec: dict[str, Any], key: str, variants: set[str]) -> list[str]:
    ids = c.str_list(rec, key)
    for item_id in ids:
        if item_id not in variants:
            raise c.fail(f"field {key!r}: unknown item_id {item_id!r}")
    return ids


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


# --- export -------------------------------------------------------------------------------


def export_store(session: Any, store: Any) -> dict[str, dict[str, Any]]:
    """A store as τ-bench's three files: ``{"users": ..., "orders": ..., "products": ...}``.

    The inverse of :func:`read` (importing a τ folder and exporting it gives equal JSON),
    including the fields τ-bench's tools write (``cancel_reason``, ``return_items``,
    ``exchange_*``, refunds in ``payment_history``, gift-card balances). Works for any
    store: fields τ-bench has no place for (dates, carriers, quantities) are left out.
    """
    from collections import defaultdict

    from sqlalchemy import select

    from knowledge_base.models import (
        Customer,
        Order,
        OrderItem,
        Payment,
        Product,
        Return,
        Shipment,
        Variant,
    )

    sid = store.id

    def rows(stmt: Any) -> list[Any]:
        return list(session.execute(stmt).mappings())

    products_t, variants_t = Product.__table__, Variant.__table__
    customers_t, orders_t = Customer.__table__, Order.__table__
    variants: dict[int, list[Any]] = defaultdict(list)
    for v in rows(select(variants_t).where(variants_t.c.store_id == sid)
                  .order_by(variants_t.c.id)):
        variants[v["product_id"]].append(v)
    products = {
        p["source_id"]: {
            "name": p["title"],
            "product_id": p["source_id"],
            "variants": {
                v["source_id"]: {
                    "item_id": v["source_id"],
                    "options": dict(v["options"] or {}),
                    "available": bool(v["available"]),
                    "price": _float(v["price"]),
                }
                for v in variants[p["id"]]
            },
        }
        for p in rows(select(products_t).where(products_t.c.store_id == sid)
                      .order_by(products_t.c.id))
    }
    customers = rows(select(customers_t).where(customers_t.c.store_id == sid)
                     .order_by(customers_t.c.id))
    customer_ids = {c["id"]: c["source_id"] for c in customers}
    orders = rows(select(orders_t).where(orders_t.c.store_id == sid).order_by(orders_t.c.id))
    children: dict[str, dict[int, list[Any]]] = {}
    for name, model in (("items", OrderItem), ("shipments", Shipment), ("payments", Payment),
                        ("returns", Return)):
        table = model.__table__
        grouped: dict[int, list[Any]] = defaultdict(list)
        stmt = (select(table).join(orders_t, orders_t.c.id == table.c.order_id)
                .where(orders_t.c.store_id == sid).order_by(table.c.id))
        for row in rows(stmt):
            grouped[row["order_id"]].append(row)
        children[name] = grouped
    users_orders: dict[int, list[str]] = defaultdict(list)
    out_orders: dict[str, Any] = {}
    for o in orders:
        if o["customer_id"] is not None:
            users_orders[o["customer_id"]].append(o["number"])
        out_orders[o["number"]] = _export_order(
            o, customer_ids.get(o["customer_id"], ""),
            {name: grouped.get(o["id"], []) for name, grouped in children.items()},
        )
    users = {
        c["source_id"]: {
            "name": {"first_name": c["first_name"], "last_name": c["last_name"]},
            "address": dict(c["address"] or {}),
            "email": c["email"],
            "payment_methods": {
                str(m.get("id", n)): dict(m) for n, m in enumerate(c["payment_methods"] or [])
            },
            "orders": users_orders.get(c["id"], []),
        }
        for c in customers
    }
    return {"users": users, "orders": out_orders, "products": products}


def _float(value: Any) -> float:
    return float(Decimal(value).quantize(CENT))


def expand_lines(items: list[Any]) -> list[Any]:
    """Order lines (rows with ``quantity`` and ``positions``) as τ-bench's one line per unit.

    Units go back to the positions recorded at import (or by an action); lines without
    valid positions fill the remaining places in line order.
    """
    total = sum(int(i["quantity"]) for i in items)
    slots: list[Any] = [None] * total
    leftovers: list[Any] = []
    for item in items:
        positions = list(item["positions"] or [])
        if (len(positions) == int(item["quantity"])
                and all(0 <= p < total and slots[p] is None for p in positions)
                and len(set(positions)) == len(positions)):
            for p in positions:
                slots[p] = item
        else:
            leftovers.extend([item] * int(item["quantity"]))
    it = iter(leftovers)
    return [slot if slot is not None else next(it) for slot in slots]


def _export_order(o: Any, user_id: str, kids: dict[str, list[Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "order_id": o["number"],
        "user_id": user_id,
        "address": dict(o["shipping_address"] or {}),
        "items": [
            {"name": i["name"], "product_id": i["product_source_id"],
             "item_id": i["variant_source_id"], "price": _float(i["unit_price"]),
             "options": dict(i["options"] or {})}
            for i in expand_lines(kids["items"])
        ],
        "fulfillments": [
            {"tracking_id": [s["tracking_number"]] if s["tracking_number"] else [],
             "item_ids": list(s["item_ids"] or [])}
            for s in kids["shipments"]
        ],
        "status": o["status"],
        "payment_history": [
            {"transaction_type": p["kind"], "amount": _float(p["amount"]),
             "payment_method_id": p["method"]}
            for p in kids["payments"]
        ],
    }
    if o["cancel_reason"]:
        doc["cancel_reason"] = o["cancel_reason"]
    for r in kids["returns"]:
        if r["kind"] == "exchange":
            doc["exchange_items"] = list(r["item_ids"] or [])
            doc["exchange_new_items"] = list(r["new_item_ids"] or [])
            doc["exchange_payment_method_id"] = r["payment_method"]
            doc["exchange_price_difference"] = (
                None if r["price_difference"] is None else _float(r["price_difference"])
            )
        else:
            doc["return_items"] = list(r["item_ids"] or [])
            doc["return_payment_method_id"] = r["payment_method"]
    return doc


def write_folder(data: dict[str, dict[str, Any]], folder: Path) -> list[Path]:
    """Write ``users.json``, ``orders.json`` and ``products.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("users", "orders", "products"):
        path = folder / f"{name}.json"
        path.write_text(json.dumps(data[name], indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        written.append(path)
    return written
