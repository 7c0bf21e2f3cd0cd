"""Per-store action settings: which kinds run automatically, need an agent, or are off,
and the policy rules the action kinds check (τ-bench's retail policy by default).

Both live in the store's settings under ``"actions"``::

    {"modes": {"cancel_order": "approval", "return_items": "off"},
     "policy": {"cancel_reasons": null, "return_window_days": 30}}

so they travel with ``chatbot kb export`` and are set with ``chatbot actions config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from chatbot.errors import ConfigError

CANCEL_ORDER = "cancel_order"
MODIFY_ORDER_ADDRESS = "modify_order_address"
MODIFY_ORDER_PAYMENT = "modify_order_payment"
MODIFY_ORDER_ITEMS = "modify_order_items"
RETURN_ITEMS = "return_items"
EXCHANGE_ITEMS = "exchange_items"
MODIFY_DEFAULT_ADDRESS = "modify_default_address"
REMOVE_ORDER_ITEMS = "remove_order_items"

KINDS = (
    CANCEL_ORDER, MODIFY_ORDER_ADDRESS, MODIFY_ORDER_PAYMENT, MODIFY_ORDER_ITEMS,
    RETURN_ITEMS, EXCHANGE_ITEMS, MODIFY_DEFAULT_ADDRESS, REMOVE_ORDER_ITEMS,
)

AUTO = "auto"
APPROVAL = "approval"
OFF = "off"
MODES = (AUTO, APPROVAL, OFF)

SETTINGS_KEY = "actions"

# How a shopper who is not signed in is identified (store settings ``"identify_by"``, next
# to ``"actions"``; chatbot/answering/identify.py does it): ``order_email`` (a guest proves
# one order with its number and checkout email), ``email`` (the account's email),
# ``name_zip`` (first and last name plus the account's zip code). τ-bench's retail policy
# (wiki.md) is ``["email", "name_zip"]``.
IDENTIFY_SETTING = "identify_by"
IDENTIFY_METHODS = ("order_email", "email", "name_zip")
DEFAULT_IDENTIFY_BY = ("order_email",)

# Every kind runs on the shopper's yes, except removing items from a pending order, which
# τ-bench's policy does not allow ("nothing else"); a store turns it on (the demo store does).
DEFAULT_MODES: dict[str, str] = {**dict.fromkeys(KINDS, AUTO), REMOVE_ORDER_ITEMS: OFF}


@dataclass(frozen=True)
class Policy:
    """The rules the action kinds check, in code, at proposal and again at execution.

    Defaults are τ-bench's retail policy (``wiki.md``); a store overrides any of them.
    """

    # Order statuses each kind may act on.
    cancel_statuses: tuple[str, ...] = ("pending",)
    modify_statuses: tuple[str, ...] = ("pending",)
    return_statuses: tuple[str, ...] = ("delivered",)
    exchange_statuses: tuple[str, ...] = ("delivered",)
    # Allowed cancellation reasons; None accepts any non-empty reason.
    cancel_reasons: tuple[str, ...] | None = ("no longer needed", "ordered by mistake")
    # Statuses the actions write.
    cancelled_status: str = "cancelled"
    items_modified_status: str = "pending (item modified)"
    return_requested_status: str = "return requested"
    exchange_requested_status: str = "exchange requested"
    # Refuse "changing" an item to the option it already is. The wiki says "different
    # product option", but τ-bench's tools accept it (a no-op line, a $0 difference) and
    # its train tasks expect that, so it is off by default.
    require_different_variant: bool = False
    # Days after delivery a return or exchange is accepted; None: no limit (τ has no dates).
    return_window_days: int | None = None
    # When a refund to a card or account arrives (gift cards are credited at once).
    refund_timing: str = "in 5 to 7 business days"
    # When the refund for items removed from a pending order is issued.
    removal_refund_timing: str = "when the rest of the order ships"
    # Minutes a proposal waits for the shopper's yes.
    proposal_ttl_minutes: int = 30

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Policy:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in (raw or {}).items():
            if key not in known:
                raise ConfigError(f"unknown action policy setting {key!r}")
            default = getattr(cls(), key)
            if isinstance(default, tuple) or key == "cancel_reasons":
                if value is None and key == "cancel_reasons":
                    values[key] = None
                    continue
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise ConfigError(f"action policy {key!r} must be a list of strings")
                values[key] = tuple(value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"action policy {key!r} must be true or false")
                values[key] = value
            elif key == "return_window_days" or isinstance(default, int):
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                          or value < 0):
                    raise ConfigError(f"action policy {key!r} must be a whole number")
                if value is None and key != "return_window_days":
                    raise ConfigError(f"action policy {key!r} must be a whole number")
                values[key] = value
            else:
                if not isinstance(value, str) or not value.strip():
                    raise ConfigError(f"action policy {key!r} must be a non-empty string")
                values[key] = value
        return replace(cls(), **values)

    def overrides(self) -> dict[str, Any]:
        """Only the settings that differ from the default, JSON-ready."""
        base = Policy()
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != getattr(base, f.name):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class ActionConfig:
    """A store's action settings: a mode per kind plus the policy."""

    modes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MODES))
    policy: Policy = field(default_factory=Policy)

    def mode(self, kind: str) -> str:
        return self.modes.get(kind, DEFAULT_MODES.get(kind, AUTO))

    def as_settings(self) -> dict[str, Any]:
        return {
            "modes": {k: v for k, v in self.modes.items() if v != DEFAULT_MODES.get(k)},
            "policy": self.policy.overrides(),
        }


def load_config(store_settings: dict[str, Any] | None) -> ActionConfig:
    """The action config stored in a store's settings (defaults where unset)."""
    raw = (store_settings or {}).get(SETTINGS_KEY) or {}
    if not isinstance(raw, dict):
        raise ConfigError("store setting 'actions' must be an object")
    modes = dict(DEFAULT_MODES)
    for kind, mode in (raw.get("modes") or {}).items():
        check_kind(kind)
        check_mode(mode)
        modes[kind] = mode
    return ActionConfig(modes=modes, policy=Policy.from_dict(raw.get("policy") or {}))


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConfigError(f"unknown action kind {kind!r} (choose from {', '.join(KINDS)})")
    return kind


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown action mode {mode!r} (choose from {', '.join(MODES)})")
    return mode


def identify_by(store_settings: dict[str, Any] | None) -> tuple[str, ...]:
    """The store's identification methods (``DEFAULT_IDENTIFY_BY`` when unset)."""
    raw = (store_settings or {}).get(IDENTIFY_SETTING)
    if raw is None:
        return DEFAULT_IDENTIFY_BY
    return check_identify_by(raw)


def check_identify_by(methods: Any) -> tuple[str, ...]:
    """``methods`` as a tuple, or ConfigError unless it is a non-empty list of
    ``IDENTIFY_METHODS`` without repeats."""
    if (not isinstance(methods, list | tuple) or not methods
            or any(m not in IDENTIFY_METHODS for m in methods)
            or len(set(methods)) != len(methods)):
        raise ConfigError(
            f"store setting {IDENTIFY_SETTING!r} must be a list of "
            f"{', '.join(IDENTIFY_METHODS)} (each at most once)")
    return tuple(methods)
