"""What the console's action form offers an agent for one conversation (issue #19).

An agent runs an action for the conversation's customer with a form per kind instead of
raw JSON: the order (the customer's newest orders, or the orders a guest proved), its
lines with the product's available options, the saved payment methods, the store's
cancellation reasons and the address to start from. The form sends the kind's usual
parameters (docs/actions.md), so the policy, the preview and the confirmation are the
same as the shopper's; this module only reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from chatbot.actions.kinds import find_method, method_label
from chatbot.actions.policy import KINDS, ActionConfig
from knowledge_base.models import Customer, Order, Product
from knowledge_base.orders import customer_orders, verified_guest_orders

# The customer's newest orders the form offers (the console's panel shows 5).
FORM_ORDERS = 10
ADDRESS_FIELDS = ("address1", "address2", "city", "state", "zip", "country")


def action_form(session: Session, store_id: int, config: ActionConfig, *,
                customer_id: int | None, verified_orders: Sequence[str]) -> dict[str, Any]:
    """The choices of the console's action form for one conversation.

    ``{"kinds": {kind: mode}, "reasons": [..] | None, "orders": [...],
    "payment_methods": [{"id", "label", "type", "balance"}], "address": {...}}``; an order
    is ``{"number", "status", "payment_method", "address", "items": [{"item_id", "name",
    "options", "quantity", "price", "variants": [{"item_id", "options", "price"}]}]}``
    with only available variants (the current one first). Nothing for a guest who proved
    no order.
    """
    customer = session.get(Customer, customer_id) if customer_id is not None else None
    if customer is not None and customer.store_id != store_id:
        customer = None
    if customer is not None:
        orders = customer_orders(session, store_id, customer.id, limit=FORM_ORDERS)
    else:
        orders = verified_guest_orders(session, store_id, list(verified_orders))
    methods = list(customer.payment_methods or []) if customer is not None else []
    products = _products(session, store_id, {i.product_source_id for o in orders
                                             for i in o.items if i.product_source_id})
    reasons = config.policy.cancel_reasons
    return {
        "kinds": {kind: config.mode(kind) for kind in KINDS},
        "reasons": list(reasons) if reasons is not None else None,
        "orders": [_order(o, products, customer) for o in orders],
        "payment_methods": [_method(m) for m in methods],
        "address": _address(customer.address if customer is not None else {}),
        "signed_in": customer is not None,
    }


def _products(session: Session, store_id: int, ids: set[str]) -> dict[str, Product]:
    if not ids:
        return {}
    rows = session.scalars(
        select(Product).where(Product.store_id == store_id, Product.source_id.in_(sorted(ids)))
        .options(selectinload(Product.variants))
    )
    return {p.source_id: p for p in rows}


def _order(order: Order, products: dict[str, Product], customer: Customer | None
           ) -> dict[str, Any]:
    # A payment row names its method ("Visa ending in 4242") or a saved method's id: the
    # saved method's id where there is one, so it matches the payment choices.
    paid: list[str] = []
    for row in order.payments:
        if row.kind == "payment":
            saved = find_method(customer, row.method)
            paid.append(str(saved["id"]) if saved is not None else row.method)
    known = {str(m.get("id", "")) for m in (customer.payment_methods or [])} if customer else set()
    return {
        "number": order.number,
        "status": order.status,
        "payment_method": paid[0] if paid else "",
        # A guest has no saved methods: the ones the order was paid with.
        "paid_with": [{"id": m, "label": m} for m in dict.fromkeys(paid) if m not in known],
        "address": _address(order.shipping_address),
        "items": [_line(i, products.get(i.product_source_id)) for i in order.items],
    }


def _line(item: Any, product: Product | None) -> dict[str, Any]:
    variants = []
    if product is not None:
        current = [v for v in product.variants if v.source_id == item.variant_source_id]
        others = [v for v in product.variants
                  if v.available and v.source_id != item.variant_source_id]
        variants = [{"item_id": v.source_id, "options": dict(v.options or {}),
                     "price": str(v.price), "current": v.source_id == item.variant_source_id}
                    for v in current + others]
    return {
        "item_id": item.variant_source_id,
        "name": item.name,
        "options": dict(item.options or {}),
        "quantity": int(item.quantity or 1),
        "price": str(item.unit_price),
        "variants": variants,
    }


def _method(method: dict[str, Any]) -> dict[str, Any]:
    balance = method.get("balance")
    return {"id": str(method.get("id", "")), "label": method_label(method).removeprefix("your "),
            "type": str(method.get("source") or method.get("type") or ""),
            "balance": None if balance is None else str(balance)}


def _address(raw: dict[str, Any] | None) -> dict[str, str]:
    raw = raw or {}
    return {key: str(raw.get(key) or "") for key in ADDRESS_FIELDS}
