"""The action kinds: each checks its policy against the current order and returns a preview
(customer-facing summary + exact details), then applies exactly that preview.

No I/O of its own beyond the session it is given; :mod:`chatbot.actions.service` runs
``check`` at proposal and again inside the execution transaction, and ``apply`` only
after the second check passed and gave the same details the shopper said yes to.

Semantics follow τ-bench's retail tools (the reference for scoring), with amounts in
``Decimal`` rounded to cents:

- ``cancel_order``: refunds what was paid, per payment method (payments minus refunds),
  gift cards credited at once; the order becomes ``cancelled`` with its reason.
- ``modify_order_address`` / ``modify_default_address``: replace the address.
- ``modify_order_payment``: one payment, moved to another saved method; a payment row for
  the new method and a refund row for the old one, gift-card balances updated.
- ``modify_order_items``: other available options of the same products, all in one call;
  one payment (or refund) row for the price difference; the order becomes
  ``pending (item modified)``.
- ``return_items`` / ``exchange_items``: a delivered order's items; a return row with the
  items, refund method (original or a gift card) and, for exchanges, the new items and
  the price difference; the order becomes ``return requested`` / ``exchange requested``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from chatbot.actions.policy import (
    CANCEL_ORDER,
    EXCHANGE_ITEMS,
    MODIFY_DEFAULT_ADDRESS,
    MODIFY_ORDER_ADDRESS,
    MODIFY_ORDER_ITEMS,
    MODIFY_ORDER_PAYMENT,
    REMOVE_ORDER_ITEMS,
    RETURN_ITEMS,
    Policy,
)
from chatbot.errors import ChatbotError
from knowledge_base.importers.tau_retail import expand_lines
from knowledge_base.models import Customer, Order, OrderItem, Payment, Product, Return, Variant

CENT = Decimal("0.01")
ADDRESS_FIELDS = ("address1", "address2", "city", "state", "country", "zip")
REQUIRED_ADDRESS_FIELDS = ("address1", "city", "country", "zip")


class ActionRefused(ChatbotError):
    """The policy refuses the request: a customer-facing reason and what is possible instead."""

    code = "action_refused"

    def __init__(self, reason: str, *, alternatives: list[str] | None = None,
                 code: str | None = None) -> None:
        super().__init__(reason, code=code)
        self.reason = reason
        self.alternatives = list(alternatives or [])


@dataclass
class Preview:
    """What an action will do, for the shopper to confirm."""

    kind: str
    order_number: str
    summary: str
    details: dict[str, Any]


@dataclass
class Context:
    """The rows an action reads and writes, loaded (and locked) by the service."""

    session: Session
    store_id: int
    policy: Policy
    order: Order | None
    customer: Customer | None  # the order's owner, or the acting customer
    now: datetime
    # "Today" for the return window: the store's fixed reference time where it has one
    # (the demo store's dates are relative to it), else ``now``.
    today: datetime | None = None


# --- parameters --------------------------------------------------------------------------


def normalize_params(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Validate the shape of an action's arguments; ActionRefused(code=bad_params) if wrong."""
    if not isinstance(raw, dict):
        raise ActionRefused("The request is missing its details.", code="bad_params")
    out: dict[str, Any] = {}
    if kind != MODIFY_DEFAULT_ADDRESS:
        out["order"] = _text(raw, "order")
    if kind == CANCEL_ORDER:
        out["reason"] = _text(raw, "reason").lower()
    if kind in (MODIFY_ORDER_ADDRESS, MODIFY_DEFAULT_ADDRESS):
        out["address"] = _address(raw.get("address"))
    if kind in (MODIFY_ORDER_PAYMENT, MODIFY_ORDER_ITEMS, RETURN_ITEMS, EXCHANGE_ITEMS):
        out["payment_method"] = _text(raw, "payment_method")
    if kind in (MODIFY_ORDER_ITEMS, RETURN_ITEMS, EXCHANGE_ITEMS, REMOVE_ORDER_ITEMS):
        out["items"] = _id_list(raw, "items")
        if not out["items"]:
            raise ActionRefused("Which items? Please list at least one.", code="bad_params")
    if kind in (MODIFY_ORDER_ITEMS, EXCHANGE_ITEMS):
        out["new_items"] = _id_list(raw, "new_items")
        if len(out["new_items"]) != len(out["items"]):
            raise ActionRefused(
                "Each item needs exactly one new option: the two lists differ in length.",
                code="bad_params",
            )
    return out


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ActionRefused(f"The request is missing its {key.replace('_', ' ')}.",
                            code="bad_params")
    return value.strip()


def _id_list(raw: dict[str, Any], key: str) -> list[str]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ActionRefused(f"The {key.replace('_', ' ')} must be a list of item ids.",
                            code="bad_params")
    return [v.strip() for v in value]


def _address(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ActionRefused("The new address is missing.", code="bad_params")
    address = {}
    for key in ADDRESS_FIELDS:
        v = value.get(key, "")
        if not isinstance(v, str):
            raise ActionRefused(f"The address field {key} must be text.", code="bad_params")
        address[key] = v.strip()
    missing = [k for k in REQUIRED_ADDRESS_FIELDS if not address[k]]
    if missing:
        raise ActionRefused(
            "The new address is incomplete: " + ", ".join(missing) + " missing.",
            code="bad_params",
        )
    return address


# --- money and payment methods ---------------------------------------------------------


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def fmt(amount: Decimal) -> str:
    return f"${abs(amount):,.2f}"


def _kind_of(method: dict[str, Any]) -> str:
    return str(method.get("source") or method.get("type") or "").lower()


def is_gift_card(method: dict[str, Any] | None) -> bool:
    return method is not None and _kind_of(method) == "gift_card"


def _labels(method: dict[str, Any]) -> list[str]:
    """The ways a payment row may name this saved method ("Visa ending in 4242", id ...)."""
    kind = _kind_of(method)
    last = str(method.get("last_four") or "")
    brand = str(method.get("brand") or "")
    labels = [str(method.get("id") or "")]
    if last:
        labels += [f"{brand} ending in {last}", f"{brand.title()} ending in {last}"]
        if kind == "gift_card":
            labels.append(f"gift card ending in {last}")
    names = {"paypal": "PayPal", "apple_pay": "Apple Pay", "google_pay": "Google Pay",
             "klarna": "Klarna"}
    if kind in names:
        labels.append(names[kind])
    return [x.lower() for x in labels if x]


def find_method(customer: Customer | None, ref: str) -> dict[str, Any] | None:
    """The customer's saved payment method ``ref`` names (by id or its usual label)."""
    if customer is None or not ref:
        return None
    wanted = ref.strip().lower()
    for method in customer.payment_methods or []:
        if str(method.get("id", "")).lower() == wanted:
            return method
    for method in customer.payment_methods or []:
        if wanted in _labels(method):
            return method
    return None


def method_label(method: dict[str, Any] | None, raw: str = "") -> str:
    """Customer-facing name: "your Visa credit card ending in 1234", "your gift card ..."."""
    if method is None:
        return raw or "the original payment method"
    kind = _kind_of(method)
    last = str(method.get("last_four") or "")
    if kind == "gift_card":
        return f"your gift card ending in {last}" if last else (
            f"your gift card {method.get('id', '')}".rstrip())
    if kind == "credit_card":
        brand = str(method.get("brand") or "").title()
        return f"your {brand + ' ' if brand else ''}credit card ending in {last}"
    if kind in ("card", "debit_card"):
        return f"your {method.get('brand') or 'card'} ending in {last}"
    if kind == "paypal":
        return "your PayPal account"
    return f"your {kind.replace('_', ' ').title()}" if kind else (raw or "that payment method")


def method_id(method: dict[str, Any] | None, raw: str) -> str:
    return str(method.get("id")) if method is not None and method.get("id") else raw


def display_name(method: dict[str, Any]) -> str:
    """How a store that writes names into payment rows names this method."""
    kind = _kind_of(method)
    last = str(method.get("last_four") or "")
    if kind == "gift_card":
        return f"Gift card ending in {last}" if last else "Gift card"
    if last:
        return f"{method.get('brand') or 'Card'} ending in {last}"
    names = {"paypal": "PayPal", "apple_pay": "Apple Pay", "google_pay": "Google Pay",
             "klarna": "Klarna"}
    return names.get(kind, str(method.get("id") or kind))


def row_method(customer: Customer | None, order: Order, method: dict[str, Any] | None,
               raw: str) -> str:
    """What a new payment row of ``order`` calls ``method``: the saved method's id where the
    order's rows use ids (τ-bench), else its display name ("Visa ending in 4242")."""
    if method is None:
        return raw
    first = order.payments[0].method if order.payments else ""
    ids = {str(m.get("id")) for m in (customer.payment_methods if customer else []) or []}
    if not first or first in ids:
        return method_id(method, raw)
    return display_name(method)


def gift_balance(method: dict[str, Any]) -> Decimal:
    return money(method.get("balance") or 0)


def _adjust_balances(customer: Customer, changes: dict[str, Decimal]) -> None:
    """Add ``changes[method id]`` to gift-card balances (a new list, so the JSON saves)."""
    if not changes or customer is None:
        return
    methods = []
    for method in customer.payment_methods or []:
        method = dict(method)
        delta = changes.get(str(method.get("id", "")))
        if delta is not None and is_gift_card(method):
            method["balance"] = float(gift_balance(method) + delta)
        methods.append(method)
    customer.payment_methods = methods


def _timing(method: dict[str, Any] | None, policy: Policy) -> str:
    return "right away" if is_gift_card(method) else policy.refund_timing


# --- items ------------------------------------------------------------------------------


def _units(order: Order) -> list[dict[str, Any]]:
    """The order's lines as one unit each, in the source's order (τ-bench's item list)."""
    rows = [
        {"line": item, "quantity": item.quantity, "positions": list(item.positions or [])}
        for item in order.items
    ]
    units = []
    for row in expand_lines(rows):
        item: OrderItem = row["line"]
        units.append({
            "item_id": item.variant_source_id, "product_id": item.product_source_id,
            "name": item.name, "options": dict(item.options or {}),
            "price": money(item.unit_price), "variant_id": item.variant_id,
        })
    return units


def _describe(name: str, options: dict[str, Any]) -> str:
    values = [str(v) for v in (options or {}).values() if str(v)]
    return f"{name} ({', '.join(values)})" if values else name


def _check_items_present(units: list[dict[str, Any]], item_ids: list[str]) -> None:
    have = Counter(u["item_id"] for u in units)
    want = Counter(item_ids)
    for item_id, n in want.items():
        if n > have.get(item_id, 0):
            raise ActionRefused(
                f"Item {item_id} is not in this order"
                + (f" {n} times." if have.get(item_id) else "."),
                code="item_not_in_order",
            )


def _first_unit(units: list[dict[str, Any]], item_id: str) -> dict[str, Any]:
    return next(u for u in units if u["item_id"] == item_id)


def _new_variant(session: Session, store_id: int, unit: dict[str, Any], new_id: str,
                 policy: Policy) -> Variant:
    row = session.execute(
        select(Variant)
        .join(Product, Product.id == Variant.product_id)
        .where(Variant.store_id == store_id, Variant.source_id == new_id,
               Product.source_id == unit["product_id"])
    ).scalars().first()
    if row is None:
        raise ActionRefused(
            f"{new_id} is not an option of {unit['name']}: an item can only change to another "
            "option of the same product.",
            alternatives=["choose another option of the same product"],
            code="not_same_product",
        )
    if not row.available:
        raise ActionRefused(
            f"{_describe(unit['name'], row.options)} is not available right now.",
            alternatives=["choose an option that is in stock"],
            code="not_available",
        )
    if policy.require_different_variant and row.source_id == unit["item_id"]:
        raise ActionRefused(
            f"{_describe(unit['name'], unit['options'])} is already that option.",
            code="same_option",
        )
    return row


def _pairs(ctx: Context, units: list[dict[str, Any]], params: dict[str, Any]
           ) -> tuple[list[dict[str, Any]], Decimal]:
    """(old unit, new variant) for each requested change, and the total price difference."""
    _check_items_present(units, params["items"])
    pairs = []
    diff = Decimal("0.00")
    for old_id, new_id in zip(params["items"], params["new_items"], strict=True):
        unit = _first_unit(units, old_id)
        variant = _new_variant(ctx.session, ctx.store_id, unit, new_id, ctx.policy)
        new_price = money(variant.price)
        diff += new_price - unit["price"]
        pairs.append({
            "item_id": old_id, "name": unit["name"], "options": unit["options"],
            "price": str(unit["price"]), "new_item_id": variant.source_id,
            "new_options": dict(variant.options or {}), "new_price": str(new_price),
            "_variant": variant,
        })
    return pairs, diff.quantize(CENT)


def _public(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if not k.startswith("_")} for p in pairs]


def _regroup(order: Order, units: list[dict[str, Any]]) -> None:
    """Write units back as lines: one per (item, price, options), positions kept."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for position, unit in enumerate(units):
        key = (unit["item_id"], unit["price"], tuple(sorted(unit["options"].items())))
        group = groups.get(key)
        if group is None:
            groups[key] = {**unit, "positions": [position]}
        else:
            group["positions"].append(position)
    order.items.clear()
    for group in groups.values():
        order.items.append(OrderItem(
            variant_id=group["variant_id"], product_source_id=group["product_id"],
            variant_source_id=group["item_id"], name=group["name"],
            options=dict(group["options"]), quantity=len(group["positions"]),
            unit_price=group["price"], positions=list(group["positions"]),
        ))
    subtotal = sum((u["price"] for u in units), Decimal("0.00"))
    order.subtotal = subtotal
    order.total = subtotal + money(order.shipping_cost or 0)


# --- status checks ----------------------------------------------------------------------


def _require_status(order: Order, allowed: tuple[str, ...], verb: str, policy: Policy) -> None:
    if order.status in allowed:
        return
    status = order.status
    alternatives: list[str] = []
    if verb in ("cancel", "change") and status not in policy.return_statuses and \
            status not in (policy.cancelled_status,) and not status.startswith("pending"):
        alternatives.append("once it has been delivered, you can return or exchange the items")
    if verb in ("cancel", "change") and status in policy.return_statuses:
        alternatives.append("you can return or exchange the delivered items instead")
    if status == policy.items_modified_status:
        alternatives.append("an agent can look at the order with you")
    if verb in ("return", "exchange") and status in policy.modify_statuses:
        alternatives.append("while it is pending you can still change or cancel it")
    if verb in ("return", "exchange") and status not in policy.modify_statuses \
            and status != policy.cancelled_status and "requested" not in status:
        alternatives.append("you can return or exchange the items once they are delivered")
    raise ActionRefused(
        f"Order {order.number} is {status}, so it can't be {_past(verb)} any more"
        if status in (policy.cancelled_status, policy.items_modified_status)
        or "requested" in status
        else f"Order {order.number} is {status}; only "
        + " or ".join(repr(s) for s in allowed) + f" orders can be {_past(verb)}.",
        alternatives=alternatives, code="wrong_status",
    )


def _past(verb: str) -> str:
    return {"cancel": "cancelled", "change": "changed", "return": "returned",
            "exchange": "exchanged"}[verb]


def _check_window(ctx: Context, order: Order, verb: str) -> None:
    days = ctx.policy.return_window_days
    if days is None:
        return
    delivered = [s.delivered_at for s in order.shipments if s.delivered_at is not None]
    if delivered and (ctx.today or ctx.now) - max(delivered) > timedelta(days=days):
        raise ActionRefused(
            f"Order {order.number} was delivered more than {days} days ago, so it can't be "
            f"{_past(verb)} any more.",
            alternatives=["an agent can look at the order with you"],
            code="outside_window",
        )


def _original_method(order: Order) -> str:
    return order.payments[0].method if order.payments else ""


def _paying_method(order: Order) -> str:
    """The method that currently holds the order's money (the last one with a net payment;
    after a payment change, the new one)."""
    net: dict[str, Decimal] = {}
    for p in order.payments:
        net[p.method] = net.get(p.method, Decimal(0)) + (
            money(p.amount) if p.kind == "payment" else -money(p.amount))
    paying = [m for m, amount in net.items() if amount > 0]
    return paying[-1] if paying else _original_method(order)


# --- the kinds --------------------------------------------------------------------------


def check(ctx: Context, kind: str, params: dict[str, Any]) -> Preview:
    """The preview of ``kind`` on the current rows; ActionRefused when the policy says no."""
    return _CHECKS[kind](ctx, params)


def apply(ctx: Context, kind: str, params: dict[str, Any], preview: Preview) -> None:
    """Write the effects of a checked preview (inside the caller's transaction)."""
    _APPLIERS[kind](ctx, params, preview)


def _cancel_check(ctx: Context, params: dict[str, Any]) -> Preview:
    order, policy = _order(ctx), ctx.policy
    _require_status(order, policy.cancel_statuses, "cancel", policy)
    reason = params["reason"]
    if policy.cancel_reasons is not None and reason not in policy.cancel_reasons:
        raise ActionRefused(
            "To cancel, the reason must be " + " or ".join(
                f"'{r}'" for r in policy.cancel_reasons) + ".",
            code="bad_reason",
        )
    net: dict[str, Decimal] = {}
    for p in order.payments:
        sign = 1 if p.kind == "payment" else -1
        net[p.method] = net.get(p.method, Decimal("0.00")) + sign * money(p.amount)
    refunds: list[dict[str, Any]] = []
    for raw, amount in net.items():
        if amount <= 0:
            continue
        method = find_method(ctx.customer, raw)
        refunds.append({"method": raw, "method_id": method_id(method, raw),
                        "label": method_label(method, raw),
                        "amount": str(amount), "gift_card": is_gift_card(method),
                        "when": _timing(method, policy)})
    parts = [f"{fmt(Decimal(r['amount']))} will be refunded to {r['label']} {r['when']}"
             for r in refunds]
    summary = f"Cancel order {order.number} (reason: {reason})."
    summary += (" " + "; ".join(parts) + ".") if parts else (
        " Nothing was paid, so there is no refund.")
    return Preview(CANCEL_ORDER, order.number, summary, {
        "order": order.number, "reason": reason, "refunds": refunds,
        "status_after": policy.cancelled_status,
        "items": [{"item_id": u["item_id"], "name": u["name"], "options": u["options"],
                   "price": str(u["price"])} for u in _units(order)],
    })


def _cancel_apply(ctx: Context, params: dict[str, Any], preview: Preview) -> None:
    order = _order(ctx)
    credits: dict[str, Decimal] = {}
    for refund in preview.details["refunds"]:
        amount = Decimal(refund["amount"])
        order.payments.append(Payment(kind="refund", amount=amount, method=refund["method"],
                                      created_at=ctx.now))
        if refund["gift_card"]:
            key = refund["method_id"]
            credits[key] = credits.get(key, Decimal(0)) + amount
    order.status = ctx.policy.cancelled_status
    order.cancel_reason = preview.details["reason"]
    _adjust_balances(ctx.customer, credits)  # type: ignore[arg-type]


def _address_text(a: dict[str, str]) -> str:
    parts = [a.get("address1", ""), a.get("address2", ""), a.get("city", "")]
    state_zip = " ".join(x for x in (a.get("state", ""), a.get("zip", "")) if x)
    return ", ".join(x for x in (*parts, state_zip, a.get("country", "")) if x)


def _address_check(ctx: Context, params: dict[str, Any]) -> Preview:
    order, policy = _order(ctx), ctx.policy
    _require_status(order, policy.modify_statuses, "change", policy)
    new = params["address"]
    return Preview(MODIFY_ORDER_ADDRESS, order.number,
                   f"Ship order {order.number} to {_address_text(new)} instead of "
                   f"{_address_text(order.shipping_address or {}) or 'the current address'}.",
                   {"order": order.number, "address": new,
                    "old_address": dict(order.shipping_address or {})})


def _address_apply(ctx: Context, params: dict[str, Any], preview: Preview) -> None:
    _order(ctx).shipping_address = dict(preview.details["address"])


def _default_address_check(ctx: Context, params: dict[str, Any]) -> Preview:
    customer = ctx.customer
    if customer is None:
        raise ActionRefused("Only a signed-in customer can change their default address.",
                            code="not_verified")
    new = params["address"]
    return Preview(MODIFY_DEFAULT_ADDRESS, "",
                   f"Change your default address to {_address_text(new)}. Existing orders "
                   "keep their shipping address.",
                   {"customer": customer.source_id, "address": new,
                    "old_address": dict(customer.address or {})})


def _default_address_apply(ctx: Context, params: dict[str, Any], preview: Preview) -> None:
    assert ctx.customer is not None
    ctx.customer.address = dict(preview.details["address"])


def _payment_check(ctx: Context, params: dict[str, Any]) -> Preview:
    order, policy = _order(ctx), ctx.policy
    _require_status(order, policy.modify_statuses, "change", policy)
    new = find_method(ctx.customer, params["payment_method"])
    if new is None:
        raise ActionRefused("That payment method is not saved on your account.",
                            alternatives=["add it to your account, then ask again"],
                            code="unknown_payment_method")
    if len(order.payments) != 1 or order.payments[0].kind != "payment":
        raise ActionRefused(
            f"The payment of order {order.number} can't be changed: it must have exactly one "
            "payment.", alternatives=["an agent can look at the order with you"],
            code="payment_not_changeable")
    old_raw = order.payments[0].method
    old = find_method(ctx.customer, old_raw)
    if method_id(new, "") == method_id(old, old_raw):
        raise ActionRefused("That is already the payment method of this order.",
                            code="same_payment_method")
    amount = money(order.payments[0].amount)
    if is_gift_card(new) and gift_balance(new) < amount:
        raise ActionRefused(
            f"{method_label(new).capitalize()} has {fmt(gift_balance(new))}, not enough "
            f"for the order's {fmt(amount)}.",
            alternatives=["choose another payment method"], code="insufficient_balance")
    return Preview(MODIFY_ORDER_PAYMENT, order.number,
                   f"Pay for order {order.number} ({fmt(amount)}) with {method_label(new)} "
                   f"instead of {method_label(old, old_raw)}. {fmt(amount)} will be charged "
                   f"to {method_label(new)}, and {method_label(old, old_raw)} will be refunded "
                   f"{fmt(amount)} {_timing(old, policy)}.",
                   {"order": order.number, "amount": str(amount),
                    "new_method": row_method(ctx.customer, order, new, ""),
                    "new_method_id": method_id(new, ""), "new_label": method_label(new),
                    "new_gift_card": is_gift_card(new),
                    "old_method": old_raw, "old_method_id": method_id(old, old_raw),
                    "old_label": method_label(old, old_raw), "old_gift_card": is_gift_card(old)})


def _payment_apply(ctx: Context, params: dict[str, Any], preview: Preview) -> None:
    order, d = _order(ctx), preview.details
    amount = Decimal(d["amount"])
    order.payments.append(Payment(kind="payment", amount=amount, method=d["new_method"],
                                  created_at=ctx.now))
    order.payments.append(Payment(kind="refund", amount=amount, method=d["old_method"],
                                  created_at=ctx.now))
    changes: dict[str, Decimal] = {}
    if d["new_gift_card"]:
        key = d["new_method_id"]
        changes[key] = changes.get(key, Decimal(0)) - amount
    if d["old_gift_card"]:
        key = d["old_method_id"]
        changes[key] = changes.get(key, Decimal(0)) + amount
    _adjust_balances(ctx.customer, changes)  # type: ignore[arg-type]


def _charge_method(ctx: Context, order: Order, ref: str) -> tuple[dict[str, Any] | None, str]:
    """The saved method to charge or refund a difference, or the order's original one."""
    method = find_method(ctx.customer, ref)
    if method is not None:
        return method, method_id(method, ref)
    original = _original_method(order)
    if ref.strip().lower() == original.lower():  # a guest order: its own method only
        return None, original
    raise ActionRefused("That payment method is not saved on your account.",
                        alternatives=["choose a saved payment method"],
                        code="unknown_payment_method")


def _difference_text(diff: Decimal, label: str, method: dict[str, Any] | None,
                     policy: Policy) -> str:
    if diff > 0:
        return f"The price difference of {fmt(diff)} will be charged to {label}."
    if diff < 0:
        return (f"The price difference of {fmt(diff)} will be refunded to {label} "
                f"{_timing(method, policy)}.")
    return "The price is the same, so nothing is charged or refunded."


def _items_text(pairs: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{_describe(p['name'], p['options'])} {fmt(Decimal(p['price']))} -> "
        f"{_describe(p['name'], p['new_options'])} {fmt(Decimal(p['new_price']))}"
        for p in pairs
    )


def _items_check(ctx: Context, params: dict[str, Any]) -> Preview:
    order, policy = _order(ctx), ctx.policy
    _require_status(order, policy.modify_statuses, "change", policy)
    pairs, diff = _pairs(ctx, _units(order), params)
    method, mid = _charge_method(ctx, order, params["payment_method"])
    if is_gift_card(method) and gift_balance(method) < diff:  # type: ignore[arg-type]
        raise ActionRefused(
            f"{method_label(method).capitalize()} has {fmt(gift_balance(method))}, not "  # type: ignore[arg-type]
            f"enough for the {fmt(diff)} difference.",
            alternatives=["choose another payment method"], code="insufficient_balance")
    label = method_label(method, mid)
    row = row_method(ctx.customer, order, method, mid)
    summary = (f"Change items in order {order.number}: {_items_text(pairs)}. "
               f"{_difference_text(diff, label, method, policy)}")
    if policy.items_modified_status not in policy.modify_statuses:
        summary += " After this change the order can't be changed or cancelled again."
    return Preview(MODIFY_ORDER_ITEMS, order.number, summary, {
        "order": order.number, "items": _public(pairs), "price_difference": str(diff),
        "method": row, "method_id": mid, "label": label, "gift_card": is_gift_card(method),
        "status_after": policy.items_modified_status,
    })


def _items_apply(ctx: Context, params: dict[str, Any], preview: Preview) -> None:
    order, d = _order(ctx), preview.details
    units = _units(order)
    for pair in d["items"]:
        unit = _first_unit(units, pair["item_id"])
        variant = ctx.session.execute(
            select(Variant).where(Variant.store_id == ctx.store_id,
                                  Variant.source_id == pair["new_item_id"])
        ).scalars().one()
        unit.update(item_id=variant.source_id, options=dict(variant.options or {}),
                    price=money(variant.price), variant_id=variant.id)
    _regroup(order, units)
    diff = Decimal(d["price_difference"])
    # τ-bench records the difference even when it is zero (as a refund of 0).
    order.payments.append(Payment(kind="payment" if diff > 0 else "refund", amount=abs(diff),
                                  method=d["method"], created_at=ctx.now))
    if d["gift_card"]:
        _adjust_balances(ctx.customer, {d["method_id"]: -diff})  # type: ignore[arg-type]
    order.status = ctx.policy.items_modified_status


def _return_check(ctx: Context, params: dict[str, Any]) -> Preview:
    order, policy = _order(ctx), ctx.policy
    _require_status(order, policy.return_statuses, "return", policy)
    _check_window(ctx, order, "return")
    units = _units(order)
    _check_items_present(units, params["items"])
    original = _original_method(order)
    method = find_method(ctx.customer, params["payment_method"])
    original_method = find_method(ctx.customer, original)
    if method is None and params["payment_method"].lower() != original.lower():
        raise ActionRefused("That payment method is not saved on your account.",
                            alternatives=["the refund can go to the original payment method "
                                          "or a gift card"], code="unknown_payment_method")
    mid = method_id(method, original)
    if not is_gift_card(method) and mid != method_id(original_method, original):
        raise ActionRefused(
            "A refund can only go to the original payment method or a gift card.",
            alternatives=[f"refund to {method_label(original_method, original)}",
                          "refund to a gift card"], code="refund_method_not_allowed")
    items = [{"item_id": i, "name": _first_unit(units, i)["name"],
              "options": _first_unit(units, i)["options"],
              "price": str(_first_unit(units, i)["price"])} for i in params["items"]]
    total = sum((Decimal(i["price"]) for i in items), Decimal("0.00"))
    label = method_label(method or original_method, original)
    summary = (f"Return from order {order.number}: "
               + "; ".join(f"{_describe(i['name'], i['options'])} {fmt(Decimal(i['price']))}"
                           for i in items)
               + f". {fmt(total)} will be refunded to {label} once the items are received; "
               "you'll get an email with how to send them back.")
    return Preview(RETURN_ITEMS, order.number, summary, {
        "order": order.number, "items": items, "refund_amount": str(total),
        "method": row_method(ctx.customer, order, method or original_method, mid),
        "method_id": mid, "label": label, "status_after": policy.return_requested_status,
    })


def _return_apply(ctx: Context, params: dict[str, Any], preview: Preview) -> None:
    order, d = _order(ctx), preview.details
    order.returns.append(Return(
        status="requested", kind="return", reason="", requested_at=ctx.now,
        item_ids=sorted(i["item_id"] for i in d["items"]),
        refund_amount=Decimal(d["refund_amount"]), payment_method=d["method"],
    ))
    order.status = ctx.policy.return_requested_status


def _exchange_check(ctx: Context, params: dict[str, Any]) -> Preview:
    order, policy = _order(ctx), ctx.policy
    _require_status(order, policy.exchange_statuses, "exchange", policy)
    _check_window(ctx, order, "exchange")
    pairs, diff = _pairs(ctx, _units(order), params)
    method, mid = _charge_method(ctx, order, params["payment_method"])
    if is_gift_card(method) and gift_balance(method) < diff:  # type: ignore[arg-type]
        raise ActionRefused(
            f"{method_label(method).capitalize()} has {fmt(gift_balance(method))}, not "  # type: ignore[arg-type]
            f"enough for the {fmt(diff)} difference.",
            alternatives=["choose another payment method"], code="insufficient_balance")
    label = method_label(method, mid)
    row = row_method(ctx.customer, order, method, mid)
    summary = (f"Exchange items from order {order.number}: {_items_text(pairs)}. "
               f"{_difference_text(diff, label, method, policy)} You'll get an email with how "
               "to send the items back; there is no need to place a new order.")
    return Preview(EXCHANGE_ITEMS, order.number, summary, {
        "order": order.number, "items": _public(pairs), "price_difference": str(diff),
        "method": row, "method_id": mid, "label": label,
        "status_after": policy.exchange_requested_status,
    })


def _exchange_apply(ctx: Context, params: dict[str, Any], preview: Preview) -> None:
    order, d = _order(ctx), preview.details
    order.returns.append(Return(
        status="requested", kind="exchange", reason="", requested_at=ctx.now,
        item_ids=sorted(p["item_id"] for p in d["items"]),
        new_item_ids=sorted(p["new_item_id"] for p in d["items"]),
        payment_method=d["method"], price_difference=Decimal(d["price_difference"]),
    ))
    order.status = ctx.policy.exchange_requested_status


def _remove_check(ctx: Context, params: dict[str, Any]) -> Preview:
    order, policy = _order(ctx), ctx.policy
    _require_status(order, policy.modify_statuses, "change", policy)
    units = _units(order)
    _check_items_present(units, params["items"])
    if len(params["items"]) >= len(units):
        raise ActionRefused(
            "That would remove every item of the order.",
            alternatives=["cancel the whole order instead"], code="would_empty_order")
    items = [{"item_id": i, "name": _first_unit(units, i)["name"],
              "options": _first_unit(units, i)["options"],
              "price": str(_first_unit(units, i)["price"])} for i in params["items"]]
    total = sum((Decimal(i["price"]) for i in items), Decimal("0.00"))
    raw = _paying_method(order)
    method = find_method(ctx.customer, raw)
    label = method_label(method, raw)
    when = "right away" if is_gift_card(method) else policy.removal_refund_timing
    summary = (f"Remove from order {order.number}: "
               + "; ".join(f"{_describe(i['name'], i['options'])} {fmt(Decimal(i['price']))}"
                           for i in items)
               + f". {fmt(total)} will be refunded to {label} {when}.")
    return Preview(REMOVE_ORDER_ITEMS, order.number, summary, {
        "order": order.number, "items": items, "refund_amount": str(total), "method": raw,
        "method_id": method_id(method, raw), "label": label, "gift_card": is_gift_card(method),
    })


def _remove_apply(ctx: Context, params: dict[str, Any], preview: Preview) -> None:
    order, d = _order(ctx), preview.details
    units = _units(order)
    for item in d["items"]:
        units.remove(_first_unit(units, item["item_id"]))
    _regroup(order, units)
    amount = Decimal(d["refund_amount"])
    order.payments.append(Payment(kind="refund", amount=amount, method=d["method"],
                                  created_at=ctx.now))
    if d["gift_card"]:
        _adjust_balances(ctx.customer, {d["method_id"]: amount})  # type: ignore[arg-type]


def _order(ctx: Context) -> Order:
    assert ctx.order is not None
    return ctx.order


_CHECKS = {
    CANCEL_ORDER: _cancel_check,
    MODIFY_ORDER_ADDRESS: _address_check,
    MODIFY_ORDER_PAYMENT: _payment_check,
    MODIFY_ORDER_ITEMS: _items_check,
    RETURN_ITEMS: _return_check,
    EXCHANGE_ITEMS: _exchange_check,
    MODIFY_DEFAULT_ADDRESS: _default_address_check,
    REMOVE_ORDER_ITEMS: _remove_check,
}
_APPLIERS = {
    CANCEL_ORDER: _cancel_apply,
    MODIFY_ORDER_ADDRESS: _address_apply,
    MODIFY_ORDER_PAYMENT: _payment_apply,
    MODIFY_ORDER_ITEMS: _items_apply,
    RETURN_ITEMS: _return_apply,
    EXCHANGE_ITEMS: _exchange_apply,
    MODIFY_DEFAULT_ADDRESS: _default_address_apply,
    REMOVE_ORDER_ITEMS: _remove_apply,
}


def snapshot(order: Order | None, customer: Customer | None) -> dict[str, Any]:
    """The rows an action may change, JSON-ready, for the audit log's before / after."""
    out: dict[str, Any] = {}
    if order is not None:
        out["order"] = {
            "number": order.number, "status": order.status,
            "cancel_reason": order.cancel_reason,
            "address": dict(order.shipping_address or {}),
            "items": [{"item_id": i.variant_source_id, "quantity": i.quantity,
                       "price": str(money(i.unit_price))} for i in order.items],
            "payments": [{"kind": p.kind, "amount": str(money(p.amount)), "method": p.method}
                         for p in order.payments],
            "returns": [{"kind": r.kind, "status": r.status, "item_ids": list(r.item_ids or []),
                         "new_item_ids": list(r.new_item_ids or []),
                         "payment_method": r.payment_method} for r in order.returns],
        }
    if customer is not None:
        out["customer"] = {
            "id": customer.source_id, "address": dict(customer.address or {}),
            "gift_cards": {str(m.get("id")): m.get("balance")
                           for m in customer.payment_methods or [] if is_gift_card(m)},
        }
    return out


def find_order(session: Session, store_id: int, number: str, *, lock: bool = False
               ) -> Order | None:
    """The store's order with this number (any spelling), optionally locked FOR UPDATE.

    Ownership is checked by the caller (the service) against the proposal's customer or
    the guest's verified orders.
    """
    from knowledge_base.orders import number_variants

    variants = [v.upper() for v in number_variants(number)]
    if not variants:
        return None
    query = select(Order).where(Order.store_id == store_id,
                                func.upper(Order.number).in_(variants))
    if lock:
        query = query.with_for_update()
    return session.execute(query.execution_options(populate_existing=True)).scalars().first()
