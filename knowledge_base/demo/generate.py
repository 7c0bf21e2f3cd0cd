"""Build ``store.json.gz``, the demo store in our JSON store format, from its sources.

    python -m knowledge_base.demo.generate            # rewrite knowledge_base/demo/store.json.gz
    python -m knowledge_base.demo.generate --check    # exit 1 if the committed file is stale
    python -m knowledge_base.demo.generate -o demo.json   # plain JSON, to read or edit

Articles and the catalogue are our hand-written YAML files; customers and orders come
from :mod:`knowledge_base.demo.history` with a fixed seed, so the output is identical on
every run and the committed file can be checked against its sources. The file is
gzipped (with a zero timestamp, so the bytes are reproducible) to keep the repository
small; ``chatbot kb import --format json`` reads ``.json.gz`` directly.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

from knowledge_base.demo import history, source
from knowledge_base.importers import json_format

log = logging.getLogger(__name__)

STORE_FILE = Path(__file__).parent / "store.json.gz"

STORE_META: dict[str, Any] = {
    "name": "demo",
    "title": "Northwind Outfitters",
    "currency": "USD",
    "allowed_origins": [],
    "settings": {
        "website": source.SITE,
        "support_email": "support@northwindoutfitters.example",
        "support_phone": "1-800-555-0142",
        "support_hours": "Mon-Fri 7 am-7 pm, Sat-Sun 9 am-5 pm Pacific",
        "timezone": "America/Los_Angeles",
        "reference_time": history.REF.isoformat(),
        # Order actions the chat assistant offers (docs/actions.md), as the help articles
        # promise: any cancellation reason, items changed more than once while pending,
        # single items removed, returns and exchanges within 30 days of delivery.
        "actions": {
            "modes": {"remove_order_items": "auto"},
            "policy": {
                "cancel_reasons": None,
                "items_modified_status": "pending",
                "return_window_days": 30,
                "refund_timing": "today",
            },
        },
    },
}


def build_document(seed: int = history.DEFAULT_SEED) -> dict[str, Any]:
    """The complete demo store document for ``seed``."""
    rng = random.Random(seed)
    products = source.load_catalogue()
    customers = history.generate_customers(rng)
    orders = history.generate_orders(rng, customers, products)
    meta: dict[str, Any] = copy.deepcopy(STORE_META)
    doc: dict[str, Any] = {
        "format": json_format.FORMAT_NAME,
        "version": json_format.FORMAT_VERSION,
        "store": meta,
        "articles": source.load_articles(),
        "products": products,
        "customers": customers,
        "orders": orders,
    }
    # A content fingerprint, so ensure_demo_store can tell an outdated copy in a database.
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()
    meta["settings"]["data_version"] = digest[:16]
    return doc


def render(seed: int = history.DEFAULT_SEED, *, compressed: bool = True) -> bytes:
    """The file's bytes: reproducible, gzipped unless ``compressed`` is false."""
    text = json_format.dumps(build_document(seed)).encode("utf-8")
    return gzip.compress(text, compresslevel=9, mtime=0) if compressed else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check store.json is current")
    parser.add_argument("--seed", type=int, default=history.DEFAULT_SEED)
    parser.add_argument("-o", "--output", type=Path, default=STORE_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = render(args.seed, compressed=args.output.suffix == ".gz")
    if args.check:
        current = args.output.read_bytes() if args.output.exists() else b""
        if current != data:
            log.error("%s is out of date: run python -m knowledge_base.demo.generate", args.output)
            return 1
        log.info("%s is up to date", args.output)
        return 0
    args.output.write_bytes(data)
    log.info("wrote %s (%d bytes)", args.output, len(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
