"""Import speed: the bulk upsert writer against a per-row ORM baseline, on SQLite.

    python bench/import_speed.py [--tau ../shared/datasets/tau_retail]

Prints seconds for: τ-bench retail import (new store), the same import again (nothing
changes), the demo store import and re-import, and, as the baseline measured in the same
run, a straightforward per-row ORM import of the same τ-bench data (look each row up by
its source id, ``session.add`` it, flush per record). Writes bench/results/import_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatbot.storage.db import Database  # noqa: E402
from knowledge_base.demo import DEMO_STORE_FILE  # noqa: E402
from knowledge_base.importers import import_path, tau_retail  # noqa: E402
from knowledge_base.importers.records import StoreData  # noqa: E402
from knowledge_base.models import (  # noqa: E402
    Article,
    Customer,
    Order,
    OrderItem,
    Payment,
    Product,
    Shipment,
    Variant,
)
from knowledge_base.stores import get_or_create_store  # noqa: E402


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def naive_import(db: Database, data: StoreData, store_name: str) -> None:
    """Baseline: one lookup and one INSERT per row, through the ORM unit of work."""
    with db.transaction() as session:
        store = get_or_create_store(session, store_name)
        for a in data.articles:
            if _find(session, Article, store.id, a["source_id"]) is None:
                session.add(Article(store_id=store.id, **a))
                session.flush()
        variant_ids: dict[str, int] = {}
        for p in data.products:
            product = _find(session, Product, store.id, p["source_id"])
            if product is None:
                fields = {k: v for k, v in p.items() if k != "variants"}
                product = Product(store_id=store.id, **fields)
                session.add(product)
                session.flush()
            for v in p["variants"]:
                variant = _find(session, Variant, store.id, v["source_id"])
                if variant is None:
                    variant = Variant(store_id=store.id, product_id=product.id, **v)
                    session.add(variant)
                    session.flush()
                variant_ids[v["source_id"]] = variant.id
        customer_ids: dict[str, int] = {}
        for c in data.customers:
            customer = _find(session, Customer, store.id, c["source_id"])
            if customer is None:
                fields = {k: v for k, v in c.items() if v is not None}
                customer = Customer(store_id=store.id, **fields)
                session.add(customer)
                session.flush()
            customer_ids[c["source_id"]] = customer.id
        for o in data.orders:
            found = session.scalars(
                select(Order).where(Order.store_id == store.id, Order.number == o["number"])
            ).first()
            if found is not None:
                continue
            order = Order(
                store_id=store.id, number=o["number"], customer_id=customer_ids[o["customer"]],
                status=o["status"], placed_at=o["placed_at"], subtotal=o["subtotal"],
                shipping_cost=o["shipping_cost"], total=o["total"], email=o["email"],
                shipping_address=o["shipping_address"],
            )
            order.items = [OrderItem(**i, variant_id=variant_ids.get(i["variant_source_id"]))
                           for i in o["items"]]
            order.shipments = [Shipment(**s) for s in o["shipments"]]
            order.payments = [Payment(**p) for p in o["payments"]]
            session.add(order)
            session.flush()


def _find(session: Session, model: type[Any], store_id: int, source_id: str) -> Any:
    return session.scalars(
        select(model).where(model.store_id == store_id, model.source_id == source_id)
    ).first()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tau", type=Path, default=REPO.parent / "shared/datasets/tau_retail")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/import_speed.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        if (args.tau / "orders.json").exists():
            results["tau_import_new_s"], s1 = timed(import_path, db, "tau-retail", args.tau, "tau")
            results["tau_reimport_s"], s2 = timed(import_path, db, "tau-retail", args.tau, "tau")
            assert s1.created["orders"] == 1000 and not s2.changed
            data = tau_retail.read(args.tau)
            results["baseline_per_row_orm_tau_import_new_s"], _ = timed(
                naive_import, db, data, "tau-naive")
            results["speedup_vs_baseline"] = round(
                results["baseline_per_row_orm_tau_import_new_s"] / results["tau_import_new_s"], 1)
        results["demo_import_new_s"], _ = timed(import_path, db, "json", DEMO_STORE_FILE, "demo")
        results["demo_reimport_s"], s4 = timed(import_path, db, "json", DEMO_STORE_FILE, "demo")
        assert not s4.changed
        db.dispose()
    for key, value in results.items():
        print(f"{key:<42} {value:.3f}" if isinstance(value, float) else f"{key:<42} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
