"""Load the demo store's hand-written sources: help articles and the product catalogue.

``articles/*.yaml`` and ``catalogue/*.yaml`` are the text we wrote; this module turns them
into records of the JSON store format, expanding each product's options into variants
with SKUs, prices and (seeded) stock levels.
"""

from __future__ import annotations

import itertools
import random
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
SITE = "https://northwindoutfitters.example"
VENDOR = "Northwind Outfitters"

# Named size runs used by the catalogue files.
SIZE_RUNS: dict[str, list[str]] = {
    "mens": ["S", "M", "L", "XL", "XXL"],
    "womens": ["XS", "S", "M", "L", "XL"],
    "kids": ["XS (4-5)", "S (6-7)", "M (8-10)", "L (12-14)", "XL (16)"],
    "mens_waist": ["30", "32", "34", "36", "38"],
    "mens_inseam": ["30", "32", "34"],
    "womens_numeric": ["2", "4", "6", "8", "10", "12", "14"],
    "womens_inseam": ["Short", "Regular", "Tall"],
    "mens_shoes": ["7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12", "13"],
    "womens_shoes": ["5", "5.5", "6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "11"],
    "kids_shoes": ["11K", "12K", "13K", "1Y", "2Y", "3Y", "4Y", "5Y", "6Y"],
}

ARTICLE_KEYS = {"id", "kind", "category", "title", "body"}
PRODUCT_KEYS = {"id", "title", "type", "sku", "price", "options", "tags", "description"}


def load_articles(folder: Path = HERE / "articles") -> list[dict[str, Any]]:
    """Every help article, in file then document order, as store-format records."""
    articles: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text(encoding="utf-8")):
            missing = ARTICLE_KEYS - set(raw)
            if missing:
                raise ValueError(f"{path.name}: article {raw.get('id')}: missing {sorted(missing)}")
            articles.append(
                {
                    "id": raw["id"],
                    "kind": raw["kind"],
                    "category": raw["category"],
                    "title": raw["title"],
                    "body": raw["body"].strip(),
                    "url": f"{SITE}/help/{raw['id']}",
                }
            )
    return articles


def load_catalogue(folder: Path = HERE / "catalogue") -> list[dict[str, Any]]:
    """Every product with its expanded variants, as store-format records."""
    products: list[dict[str, Any]] = []
    prefixes: set[str] = set()
    for path in sorted(folder.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text(encoding="utf-8")):
            missing = PRODUCT_KEYS - set(raw)
            if missing:
                raise ValueError(f"{path.name}: product {raw.get('id')}: missing {sorted(missing)}")
            if raw["sku"] in prefixes:
                raise ValueError(f"{path.name}: duplicate SKU prefix {raw['sku']}")
            prefixes.add(raw["sku"])
            products.append(_product(raw))
    return products


def _product(raw: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, list[str]] = {
        name: SIZE_RUNS[values] if isinstance(values, str) else [str(v) for v in values]
        for name, values in raw["options"].items()
    }
    price_add = {str(k): Decimal(str(v)) for k, v in (raw.get("price_add") or {}).items()}
    base = Decimal(str(raw["price"]))
    compare_at = Decimal(str(raw["compare_at"])) if raw.get("compare_at") else None
    codes = {name: _codes(values) for name, values in options.items()}
    variants = []
    for combo in itertools.product(*options.values()):
        chosen = dict(zip(options, combo, strict=True))
        extra = sum((price_add.get(v, Decimal(0)) for v in combo), Decimal(0))
        sku = "-".join(["NW", raw["sku"], *(codes[n][v] for n, v in chosen.items())])
        # Stock comes from a per-SKU seed, so adding a product never reshuffles the others.
        rng = random.Random(f"stock:{sku}")
        available = rng.random() > 0.1
        variants.append(
            {
                "id": sku,
                "sku": sku,
                "title": " / ".join(combo),
                "options": chosen,
                "price": float(base + extra),
                "compare_at_price": float(compare_at + extra) if compare_at else None,
                "available": available,
                "inventory": rng.randint(1, 80) if available else 0,
            }
        )
    return {
        "id": raw["id"],
        "title": raw["title"],
        "description": raw["description"].strip(),
        "product_type": raw["type"],
        "vendor": VENDOR,
        "tags": list(raw["tags"]),
        "url": f"{SITE}/products/{raw['id']}",
        "option_names": list(options),
        "variants": variants,
    }


def _codes(values: list[str]) -> dict[str, str]:
    """Short, unique SKU codes for one option's values ("Storm Blue" -> "SB", "8.5" -> "8H")."""
    out: dict[str, str] = {}
    for value in values:
        plain = value.split(" (")[0].replace(".5", "H").replace("$", "")
        tokens = re.findall(r"[A-Za-z0-9]+", plain)
        if len(tokens) == 1:
            token = tokens[0]
            code = token[:3].upper() if token.isalpha() else token.upper()
        else:
            code = "".join(t if t.isdigit() else t[0] for t in tokens).upper()
        if code in out.values():
            code = "".join(tokens).upper()
        if code in out.values():
            raise ValueError(f"cannot make a unique SKU code for {value!r} among {values}")
        out[value] = code
    return out
