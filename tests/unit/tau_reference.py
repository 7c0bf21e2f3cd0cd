"""An independent model of τ-bench's retail write tools on the plain JSON state.

Written from τ-bench's documented behaviour (its tool descriptions and the dataset
README), on dicts, with no database and none of our code: the tests replay a task both
ways and require equal states, so our executors are checked against τ's semantics and
not against themselves. Amounts are compared in cents (τ keeps raw float sums).
"""

from __future__ import annotations

import copy
from typing import Any


class ToolError(Exception):
    pass


def _order(state: dict[str, Any], order_id: str) -> dict[str, Any]:
    if order_id not in state["orders"]:
        raise ToolError("order not found")
    return state["orders"][order_id]


def _methods(state: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    return state["users"][order["user_id"]]["payment_methods"]


def _add(method: dict[str, Any], amount: float) -> None:
    method["balance"] = round(method["balance"] + amount, 2)


def _address(a: dict[str, Any]) -> dict[str, Any]:
    return {k: a[k] for k in ("address1", "address2", "city", "state", "country", "zip")}


def _check_items(order: dict[str, Any], item_ids: list[str]) -> None:
    have = [i["item_id"] for i in order["items"]]
    for item_id in item_ids:
        if item_ids.count(item_id) > have.count(item_id):
            raise ToolError(f"{item_id} not found")


def _diff(state: dict[str, Any], order: dict[str, Any], old: list[str], new: list[str]) -> float:
    if len(old) != len(new):
        raise ToolError("lengths differ")
    total = 0.0
    for a, b in zip(old, new, strict=True):
        line = next(i for i in order["items"] if i["item_id"] == a)
        variants = state["products"][line["product_id"]]["variants"]
        if b not in variants or not variants[b]["available"]:
            raise ToolError(f"{b} not available")
        total += variants[b]["price"] - line["price"]
    return total


def call(state: dict[str, Any], name: str, a: dict[str, Any]) -> None:
    """Apply one tool call to ``state`` in place; ToolError (state unchanged) when refused."""
    if name == "cancel_pending_order":
        order = _order(state, a["order_id"])
        if order["status"] != "pending":
            raise ToolError("not pending")
        if a["reason"] not in ("no longer needed", "ordered by mistake"):
            raise ToolError("bad reason")
        refunds = []
        for p in order["payment_history"]:
            refunds.append({"transaction_type": "refund", "amount": p["amount"],
                            "payment_method_id": p["payment_method_id"]})
            if "gift_card" in p["payment_method_id"]:
                _add(_methods(state, order)[p["payment_method_id"]], p["amount"])
        order["status"] = "cancelled"
        order["cancel_reason"] = a["reason"]
        order["payment_history"].extend(refunds)
    elif name == "modify_pending_order_address":
        order = _order(state, a["order_id"])
        if order["status"] != "pending":
            raise ToolError("not pending")
        order["address"] = _address(a)
    elif name == "modify_user_address":
        state["users"][a["user_id"]]["address"] = _address(a)
    elif name == "modify_pending_order_payment":
        order = _order(state, a["order_id"])
        methods = _methods(state, order)
        new_id = a["payment_method_id"]
        history = order["payment_history"]
        if order["status"] != "pending" or new_id not in methods:
            raise ToolError("not pending / unknown method")
        if len(history) > 1 or history[0]["transaction_type"] != "payment":
            raise ToolError("not exactly one payment")
        old_id, amount = history[0]["payment_method_id"], history[0]["amount"]
        if old_id == new_id:
            raise ToolError("same method")
        new = methods[new_id]
        if new["source"] == "gift_card" and new["balance"] < amount:
            raise ToolError("insufficient balance")
        history.append({"transaction_type": "payment", "amount": amount,
                        "payment_method_id": new_id})
        history.append({"transaction_type": "refund", "amount": amount,
                        "payment_method_id": old_id})
        if new["source"] == "gift_card":
            _add(new, -amount)
        if "gift_card" in old_id:
            _add(methods[old_id], amount)
    elif name == "modify_pending_order_items":
        order = _order(state, a["order_id"])
        if order["status"] != "pending":
            raise ToolError("not pending")
        _check_items(order, a["item_ids"])
        diff = _diff(state, order, a["item_ids"], a["new_item_ids"])
        methods = _methods(state, order)
        if a["payment_method_id"] not in methods:
            raise ToolError("unknown method")
        method = methods[a["payment_method_id"]]
        if method["source"] == "gift_card" and method["balance"] < diff:
            raise ToolError("insufficient balance")
        order["payment_history"].append({
            "transaction_type": "payment" if diff > 0 else "refund",
            "amount": round(abs(diff), 2), "payment_method_id": a["payment_method_id"]})
        if method["source"] == "gift_card":
            _add(method, -diff)
        for old, new in zip(a["item_ids"], a["new_item_ids"], strict=True):
            line = next(i for i in order["items"] if i["item_id"] == old)
            variant = state["products"][line["product_id"]]["variants"][new]
            line.update(item_id=new, price=variant["price"], options=dict(variant["options"]))
        order["status"] = "pending (item modified)"
    elif name == "return_delivered_order_items":
        order = _order(state, a["order_id"])
        if order["status"] != "delivered":
            raise ToolError("not delivered")
        pm = a["payment_method_id"]
        if pm not in _methods(state, order):
            raise ToolError("unknown method")
        if "gift_card" not in pm and pm != order["payment_history"][0]["payment_method_id"]:
            raise ToolError("refund must go to the original method or a gift card")
        _check_items(order, a["item_ids"])
        order["status"] = "return requested"
        order["return_items"] = sorted(a["item_ids"])
        order["return_payment_method_id"] = pm
    elif name == "exchange_delivered_order_items":
        order = _order(state, a["order_id"])
        if order["status"] != "delivered":
            raise ToolError("not delivered")
        _check_items(order, a["item_ids"])
        diff = round(_diff(state, order, a["item_ids"], a["new_item_ids"]), 2)
        methods = _methods(state, order)
        if a["payment_method_id"] not in methods:
            raise ToolError("unknown method")
        method = methods[a["payment_method_id"]]
        if method["source"] == "gift_card" and method["balance"] < diff:
            raise ToolError("insufficient balance")
        order["status"] = "exchange requested"
        order["exchange_items"] = sorted(a["item_ids"])
        order["exchange_new_items"] = sorted(a["new_item_ids"])
        order["exchange_payment_method_id"] = a["payment_method_id"]
        order["exchange_price_difference"] = diff
    # read-only tools change nothing


def replay(initial: dict[str, Any], actions: list[dict[str, Any]]
           ) -> tuple[dict[str, Any], list[str]]:
    """The state after the task's actions, and the calls that τ refuses."""
    state = copy.deepcopy(initial)
    errors = []
    for action in actions:
        try:
            call(state, action["name"], action.get("arguments") or {})
        except ToolError as exc:
            errors.append(f"{action['name']}: {exc}")
    return state, errors
