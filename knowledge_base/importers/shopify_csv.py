"""Shopify's product CSV export (Products > Export > "CSV for Excel, Numbers, or other").

Rows that share a ``Handle`` are one product: the first row carries the title, body,
vendor, type and tags, and each row with option values or a price is one variant. Rows
with only an ``Image Src`` are extra images and are skipped. Draft and archived products
(``Status``) and unpublished ones are skipped too: shoppers cannot buy them, so the bot
should not offer them. Errors name the CSV line where the bad record starts.
"""

from __future__ import annotations

import csv
import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from chatbot.errors import ImportFileError
from knowledge_base.importers.records import Checker, StoreData, check_unique

REQUIRED_COLUMNS = ("Handle", "Variant Price")
# Shopify's placeholder for products without options.
DEFAULT_OPTION = ("Title", "Default Title")
_FALSE = {"false", "no", "0"}


def read(path: Path) -> StoreData:
    """Parse and validate a Shopify product CSV; raises ImportFileError with the line number."""
    where = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(_rows(where, handle))
    except FileNotFoundError:
        raise ImportFileError(where, "file", "no such file") from None
    except IsADirectoryError:
        raise ImportFileError(where, "file", "is a directory, expected a .csv file") from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(where, "file", f"not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise ImportFileError(where, "file", f"malformed CSV: {exc}") from None

    products: dict[str, dict[str, Any]] = {}
    hidden: set[str] = set()
    for line, row in rows:
        c = Checker(where, f"line {line}")
        handle_id = c.text(row, "Handle", required=True, max_len=100)
        product = products.get(handle_id)
        if product is None and handle_id not in hidden:
            if not _visible(row):
                hidden.add(handle_id)
                continue
            product = _product(c, handle_id, row)
            products[handle_id] = product
        if product is None:
            continue
        if _is_image_row(row):
            continue
        product["variants"].append(_variant(c, product, row))
    data = StoreData(products=[p for p in products.values() if p["variants"]])
    check_unique(where, "variant", [v["source_id"] for p in data.products for v in p["variants"]])
    return data


def _rows(where: str, handle: Any) -> Any:
    reader = csv.DictReader(handle)
    header = reader.fieldnames or []
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise ImportFileError(where, "line 1", f"missing column {column!r}")
    start = reader.line_num + 1
    for row in reader:
        # A quoted Body (HTML) may span lines; report where the record starts.
        yield start, {k: (v or "") for k, v in row.items() if k is not None}
        start = reader.line_num + 1


def _visible(row: dict[str, str]) -> bool:
    status = row.get("Status", "").strip().lower()
    published = row.get("Published", "").strip().lower()
    return status in ("", "active") and published not in _FALSE


def _is_image_row(row: dict[str, str]) -> bool:
    variant_cols = ("Option1 Value", "Variant Price", "Variant SKU")
    return not any(row.get(col, "").strip() for col in variant_cols)


def _product(c: Checker, handle_id: str, row: dict[str, str]) -> dict[str, Any]:
    title = c.text(row, "Title", max_len=300)
    if not title:
        raise c.fail(f"the first row of product {handle_id!r} has no Title")
    category = row.get("Product Category", "").split(">")[-1].strip()
    option_names = [
        row.get(f"Option{n} Name", "").strip()
        for n in (1, 2, 3)
        if row.get(f"Option{n} Name", "").strip()
    ]
    if option_names == [DEFAULT_OPTION[0]] and row.get("Option1 Value") == DEFAULT_OPTION[1]:
        option_names = []
    return {
        "source_id": handle_id,
        "title": title,
        "description": html_to_text(row.get("Body (HTML)", "")),
        "product_type": (row.get("Type", "").strip() or category)[:100],
        "vendor": c.text(row, "Vendor", max_len=100),
        "tags": [t.strip() for t in row.get("Tags", "").split(",") if t.strip()],
        "url": "",
        "option_names": option_names,
        "variants": [],
    }


def _variant(c: Checker, product: dict[str, Any], row: dict[str, str]) -> dict[str, Any]:
    options = {
        name: row.get(f"Option{n} Value", "").strip()
        for n, name in enumerate(product["option_names"], start=1)
    }
    if any(not v for v in options.values()):
        missing = [k for k, v in options.items() if not v]
        raise c.fail(f"variant of {product['source_id']!r} has no value for {missing[0]!r}")
    price = c.money(row, "Variant Price", required=True)
    compare_at = c.money(row, "Variant Compare At Price")
    if compare_at is not None and compare_at == 0:
        compare_at = None
    sku = c.text(row, "Variant SKU", max_len=100)
    qty_text = row.get("Variant Inventory Qty", "").strip()
    inventory: int | None = None
    if qty_text:
        try:
            inventory = int(float(qty_text))
        except ValueError:
            raise c.fail(f"Variant Inventory Qty is not a number: {qty_text!r}") from None
    tracked = row.get("Variant Inventory Tracker", "").strip() != "" or inventory is not None
    sells_when_out = row.get("Variant Inventory Policy", "").strip().lower() == "continue"
    available = sells_when_out or not tracked or (inventory or 0) > 0
    # Shopify exports carry no variant id; the SKU is the stable key when there is one.
    key = sku or "/".join([product["source_id"], *options.values()]) or product["source_id"]
    return {
        "source_id": key[:100],
        "sku": sku,
        "title": " / ".join(options.values()) if options else "Default",
        "options": options,
        "price": price,
        "compare_at_price": compare_at,
        "available": available,
        "inventory": inventory,
    }


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML fragment, keeping paragraph and list structure."""

    BLOCKS = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
              "table", "section"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")
            if tag == "li":
                self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS and tag not in ("li", "br"):
            # A closed paragraph ends with a blank line; list items and <br> do not.
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(fragment: str) -> str:
    """Plain text from Shopify's ``Body (HTML)``: tags dropped, entities decoded, tidy lines."""
    parser = _TextExtractor()
    parser.feed(fragment)
    parser.close()
    text = html.unescape("".join(parser.parts)).replace("\xa0", " ")
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    # Lists read best tight: no blank line between consecutive items.
    out = [
        line for i, line in enumerate(out)
        if line or not (0 < i < len(out) - 1 and out[i - 1].startswith("- ")
                        and out[i + 1].startswith("- "))
    ]
    return "\n".join(out).strip()
