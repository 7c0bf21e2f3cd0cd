"""Format-neutral import records and the value checks every importer shares.

An importer parses its whole file into a :class:`StoreData` (plain dicts whose keys are
the model column names) before anything touches the database; :mod:`.writer` then
upserts it in one transaction. Checks raise :class:`ImportFileError` with the file,
the record or line, and the reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from chatbot.errors import ImportFileError

CENT = Decimal("0.01")


@dataclass
class StoreData:
    """Everything one import file holds, validated, in file order.

    ``products[i]["variants"]`` and ``orders[i]["items" | "shipments" | "payments" |
    "returns"]`` hold child rows; ``orders[i]["customer"]`` is a customer source id
    (or ``None`` for a guest order).
    """

    meta: dict[str, Any] = field(default_factory=dict)
    articles: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "articles": len(self.articles),
            "products": len(self.products),
            "variants": sum(len(p["variants"]) for p in self.products),
            "customers": len(self.customers),
            "orders": len(self.orders),
        }


@dataclass
class ImportSummary:
    """What an import did: per entity, how many rows were created, updated or unchanged."""

    store: str
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)

    ENTITIES = ("articles", "products", "variants", "customers", "orders")

    @property
    def changed(self) -> bool:
        return bool(sum(self.created.values()) + sum(self.updated.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            **{
                name: {
                    "created": self.created[name],
                    "updated": self.updated[name],
                    "unchanged": self.unchanged[name],
                }
                for name in self.ENTITIES
            },
        }


class Checker:
    """Typed field accessors bound to one file and one record, for precise error messages."""

    def __init__(self, path: str, location: str) -> None:
        self.path = path
        self.location = location

    def fail(self, reason: str) -> ImportFileError:
        return ImportFileError(self.path, self.location, reason)

    def obj(self, value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{what} must be an object, got {_kind(value)}")
        return value

    def text(self, rec: dict[str, Any], key: str, *, required: bool = False, max_len: int = 0,
            default: str = "") -> str:
        if key not in rec or rec[key] is None:
            if required:
                raise self.fail(f"missing required field {key!r}")
            return default
        value = rec[key]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(f"field {key!r} must be a string, got {_kind(value)}")
        text = str(value).strip()
        if required and not text:
            raise self.fail(f"field {key!r} must not be empty")
        if max_len and len(text) > max_len:
            raise self.fail(f"field {key!r} is longer than {max_len} characters")
        return text

    def money(self, rec: dict[str, Any], key: str, *, required: bool = False,
              default: Decimal | None = None) -> Decimal | None:
        if key not in rec or rec[key] is None or rec[key] == "":
            if required:
                raise self.fail(f"missing required field {key!r}")
            return default
        return self.parse_money(rec[key], key)

    def parse_money(self, value: Any, key: str) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise self.fail(f"field {key!r} must be a number, got {_kind(value)}")
        try:
            amount = Decimal(str(value).strip().lstrip("$").replace(",", ""))
        except InvalidOperation:
            raise self.fail(f"field {key!r} is not a valid amount: {value!r}") from None
        if not amount.is_finite():
            raise self.fail(f"field {key!r} is not a valid amount: {value!r}")
        if amount < 0:
            raise self.fail(f"field {key!r} must not be negative: {value!r}")
        if amount >= Decimal("1e10"):
            raise self.fail(f"field {key!r} is too large: {value!r}")
        return amount.quantize(CENT)

    def signed_money(self, rec: dict[str, Any], key: str) -> Decimal | None:
        """An optional amount that may be negative (a price difference refunded)."""
        if key not in rec or rec[key] is None or rec[key] == "":
            return None
        value = rec[key]
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            return -self.parse_money(-value, key)
        if isinstance(value, str) and value.strip().startswith("-"):
            return -self.parse_money(value.strip()[1:], key)
        return self.parse_money(value, key)

    def integer(self, rec: dict[str, Any], key: str, *, default: int | None = None,
            minimum: int | None = None) -> int | None:
        if key not in rec or rec[key] is None:
            return default
        value = rec[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"field {key!r} must be an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(f"field {key!r} must be at least {minimum}, got {value}")
        return value

    def boolean(self, rec: dict[str, Any], key: str, *, default: bool) -> bool:
        if key not in rec or rec[key] is None:
            return default
        value = rec[key]
        if not isinstance(value, bool):
            raise self.fail(f"field {key!r} must be true or false, got {_kind(value)}")
        return value

    def timestamp(self, rec: dict[str, Any], key: str) -> datetime | None:
        if key not in rec or rec[key] is None or rec[key] == "":
            return None
        value = rec[key]
        if not isinstance(value, str):
            raise self.fail(f"field {key!r} must be an ISO 8601 date-time string")
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail(f"field {key!r} is not an ISO 8601 date-time: {value!r}") from None
        if parsed.tzinfo is not None:
            # Stored naive in UTC, like every timestamp column of the schema.
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed.replace(microsecond=0)

    def str_list(self, rec: dict[str, Any], key: str) -> list[str]:
        value = rec.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"field {key!r} must be a list of strings")
        return list(value)

    def str_map(self, rec: dict[str, Any], key: str) -> dict[str, str]:
        value = rec.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(f"field {key!r} must be an object of strings, got {_kind(value)}")
        out: dict[str, str] = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise self.fail(f"field {key}.{k} must be a string, got {_kind(v)}")
            out[str(k)] = str(v)
        return out

    def choice(self, rec: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(rec, key, default=default)
        if value not in choices:
            raise self.fail(f"field {key!r} must be one of {', '.join(choices)}, got {value!r}")
        return value


def _kind(value: Any) -> str:
    return {
        dict: "an object", list: "a list", str: "a string", bool: "a boolean",
        int: "a number", float: "a number", type(None): "null",
    }.get(type(value), type(value).__name__)


def check_unique(path: str, what: str, ids: list[str]) -> None:
    """Raise when an id occurs twice in one file (an upsert could not tell them apart)."""
    seen: set[str] = set()
    for source_id in ids:
        if source_id in seen:
            raise ImportFileError(path, f"{what} {source_id}", f"duplicate {what} id {source_id!r}")
        seen.add(source_id)
