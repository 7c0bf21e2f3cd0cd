"""``chatbot kb search`` end to end: a real SQLite data dir, the real model and index."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatbot.cli import cli
from chatbot.storage.db import Database
from knowledge_base.models import Article, Product, Store, Variant


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    db = Database(f"sqlite:///{tmp_path / 'chatbot.db'}")
    with db.transaction() as s:
        store = Store(name="shop", widget_key="shop-key", title="Shop")
        s.add(store)
        s.flush()
        s.add_all([
            Article(store_id=store.id, source_id="returns", kind="policy",
                    title="Return policy", body="Return unworn items within 30 days."),
            Article(store_id=store.id, source_id="shipping", kind="faq",
                    title="How long does shipping take?",
                    body="Standard shipping takes 5-7 business days.",
                    url="/help/shipping"),
        ])
        lamp = Product(store_id=store.id, source_id="headlamp", title="Beacon 400 Headlamp",
                       product_type="Lighting", description="A 400-lumen rechargeable headlamp.")
        lamp.variants = [Variant(store_id=store.id, source_id="h1", sku="NW-H40-BLA",
                                 options={"Color": "Black"}, price=Decimal("59.00"))]
        s.add(lamp)
    db.dispose()
    return tmp_path


def _run(data_dir: Path, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, ["--data-dir", str(data_dir), "kb", "search", *args])
    return result.exit_code, result.stdout, result.stderr


def test_search_builds_the_index_then_prints_json_hits(data_dir: Path) -> None:
    code, out, err = _run(data_dir, "--store", "shop", "--json", "-k", "2",
                          "how many days for delivery")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["store"] == "shop" and payload["query"] == "how many days for delivery"
    assert len(payload["hits"]) == 2
    top = payload["hits"][0]
    assert top["id"] == "shipping" and top["kind"] == "faq" and top["url"] == "/help/shipping"
    assert "5-7 business days" in top["snippet"] and 0 < top["score"] <= 1
    assert "3 added" in err
    assert (data_dir / "indexes" / "store-1" / "chunks.sqlite").exists()

    # Second run: the index is current, nothing is embedded again.
    code, out, err = _run(data_dir, "--store", "shop-key", "NW-H40-BLA")
    assert code == 0 and "added" not in err
    assert out.splitlines()[0].startswith("1. [product] headlamp")
    assert "NW-H40-BLA" in out


def test_unknown_store_and_empty_query_fail_cleanly(data_dir: Path) -> None:
    code, _, err = _run(data_dir, "--store", "nope", "returns")
    assert code != 0 and "unknown store 'nope'" in err
    code, _, err = _run(data_dir, "--store", "shop", "  ")
    assert code != 0 and "query is empty" in err
