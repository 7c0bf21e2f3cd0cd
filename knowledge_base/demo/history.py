"""Seeded customers and order history for the demo store.

Everything derives from ``random.Random(seed)`` and the fixed reference time ``REF``, so
the same seed always gives the same file. Order dates, shipments, payments and returns
are consistent with each order's status as seen at ``REF`` and with the help articles
(shipping prices, business-day transit times, the 30-day return window).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from knowledge_base.demo import carriers, people

# "Now" for the demo store: Monday 2 November 2026, 9:00 store time (Pacific).
REF = datetime(2026, 11, 2, 9, 0)
DEFAULT_SEED = 20261102
CUSTOMERS = 300

# Exact number of orders per status (1,000 in all).
STATUS_COUNTS: dict[str, int] = {
    "pending": 35,
    "processing": 50,
    "shipped": 80,
    "out for delivery": 25,
    "delivered": 520,
    "cancelled": 70,
    "return requested": 45,
    "returned": 30,
    "refunded": 75,
    "exchange requested": 30,
    "exchanged": 40,
}

CENT = Decimal("0.01")
FREE_STANDARD_FROM = Decimal("75")
FREE_INTERNATIONAL_FROM = Decimal("200")
SHIPPING = {"standard": Decimal("5.95"), "expedited": Decimal("14.95"),
            "overnight": Decimal("29.95"), "international": Decimal("24.95")}
# Business days in transit after the parcel leaves the warehouse.
TRANSIT = {"standard": (5, 7), "expedited": (2, 3), "overnight": (1, 1),
           "international": (4, 10), "remote": (6, 10)}
NO_SALE = ("Gift Cards",)
# What the international-shipping article says cannot ship abroad (knives: UK, Australia).
NO_EXPORT: dict[str, tuple[str, ...]] = {
    "*": ("fuel-canister-230",),
    "United Kingdom": ("fuel-canister-230", "multitool"),
    "Australia": ("fuel-canister-230", "multitool"),
}


def add_business_days(start: datetime, days: int) -> datetime:
    day = start
    while days > 0:
        day += timedelta(days=1)
        if day.weekday() < 5:
            days -= 1
    return day


def ship_time(placed: datetime, rng: random.Random) -> datetime:
    """When the warehouse hands the parcel over: same day before 2 pm on weekdays."""
    day = placed
    if placed.weekday() >= 5 or placed.hour >= 14:
        day = add_business_days(placed.replace(hour=0, minute=0), 1)
    return day.replace(hour=rng.randint(15, 18), minute=rng.randrange(0, 60, 5))


def generate_customers(rng: random.Random, count: int = CUSTOMERS) -> list[dict[str, Any]]:
    customers: list[dict[str, Any]] = []
    ids: set[str] = set()
    emails: set[str] = set()
    while len(customers) < count:
        first, last = rng.choice(people.FIRST_NAMES), rng.choice(people.LAST_NAMES)
        source_id = f"{first}_{last}_{rng.randint(1000, 9999)}".lower()
        email = f"{first}.{last}{rng.randint(1, 99)}@{rng.choice(people.EMAIL_DOMAINS)}".lower()
        if source_id in ids or email in emails:
            continue
        ids.add(source_id)
        emails.add(email)
        address, phone = _address(rng, international=rng.random() < 0.05)
        customers.append(
            {
                "id": source_id,
                "email": email,
                "first_name": first,
                "last_name": last,
                "phone": phone,
                "address": address,
                "payment_methods": _payment_methods(rng, email),
                "created_at": (REF - timedelta(days=rng.randint(400, 1500),
                                               minutes=rng.randint(0, 1439))).isoformat(),
            }
        )
    return customers


def _address(rng: random.Random, *, international: bool) -> tuple[dict[str, str], str]:
    street = f"{rng.randint(12, 9899)} {rng.choice(people.STREETS)}"
    line2 = f"Apt {rng.randint(1, 40)}{rng.choice('ABCD')}" if rng.random() < 0.3 else ""
    if international:
        place = rng.choice(people.INTL_ADDRESSES)
        phone = f"{place['phone']} {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
        return ({"address1": street, "address2": line2, "city": place["city"],
                 "state": place["state"], "zip": place["zip"], "country": place["country"]}, phone)
    city, state, zip3, area = rng.choice(people.US_CITIES)
    phone = f"+1 {area}-555-01{rng.randint(0, 99):02d}"
    return ({"address1": street, "address2": line2, "city": city, "state": state,
             "zip": f"{zip3}{rng.randint(1, 99):02d}", "country": "USA"}, phone)


def _payment_methods(rng: random.Random, email: str) -> list[dict[str, Any]]:
    methods: list[dict[str, Any]] = []
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        kind = rng.choices(("card", "paypal", "apple_pay", "gift_card"), (6, 2, 1, 1))[0]
        if any(m["type"] == kind for m in methods) and kind != "card":
            continue
        last4 = f"{rng.randint(0, 9999):04d}"
        if kind == "card":
            brand = rng.choice(people.CARD_BRANDS)
            methods.append({"id": f"card_{brand.split()[0].lower()}_{last4}", "type": "card",
                            "brand": brand, "last_four": last4,
                            "expires": f"{rng.randint(1, 12):02d}/{rng.randint(27, 31)}"})
        elif kind == "paypal":
            methods.append({"id": "paypal", "type": "paypal", "email": email})
        elif kind == "apple_pay":
            methods.append({"id": "apple_pay", "type": "apple_pay"})
        else:
            methods.append({"id": f"gift_card_{last4}", "type": "gift_card", "last_four": last4,
                            "balance": float(rng.randrange(0, 20000, 5)) / 100})
    return methods


def method_label(method: dict[str, Any]) -> str:
    """How a payment method reads on an order ("Visa ending in 4242")."""
    if method["type"] == "card":
        return f"{method['brand']} ending in {method['last_four']}"
    if method["type"] == "gift_card":
        return f"Gift card ending in {method['last_four']}"
    return {"paypal": "PayPal", "apple_pay": "Apple Pay"}.get(method["type"], method["type"])


def generate_orders(rng: random.Random, customers: list[dict[str, Any]],
                    products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """1,000 orders in every status; numbered #NW10001 upwards in the order they were placed."""
    statuses = [s for s, n in STATUS_COUNTS.items() for _ in range(n)]
    rng.shuffle(statuses)
    # Some customers order often, most a few times, some never (at most about a dozen).
    weights = [rng.lognormvariate(0.0, 0.5) for _ in customers]
    sellable = [p for p in products if p["product_type"] not in NO_SALE]
    popularity = [rng.uniform(0.3, 3.0) for _ in sellable]
    orders = []
    for status in statuses:
        guest = rng.random() < 0.05
        customer = None if guest else rng.choices(customers, weights)[0]
        orders.append(_order(rng, status, customer, sellable, popularity))
    orders.sort(key=lambda o: o["placed_at"])
    first_order: dict[str, str] = {}
    for n, order in enumerate(orders):
        order["number"] = f"#NW{10001 + n}"
        if order["customer"] and order["customer"] not in first_order:
            first_order[order["customer"]] = order["placed_at"]
    # An account is always older than its first order.
    for customer in customers:
        first = first_order.get(customer["id"])
        if first and customer["created_at"] > first:
            customer["created_at"] = (datetime.fromisoformat(first) - timedelta(days=3)).isoformat()
    return [{"number": o.pop("number"), **o} for o in orders]


def _order(rng: random.Random, status: str, customer: dict[str, Any] | None,
           products: list[dict[str, Any]], popularity: list[float]) -> dict[str, Any]:
    if customer is None:
        first, last = rng.choice(people.FIRST_NAMES), rng.choice(people.LAST_NAMES)
        email = f"{first}.{last}.{rng.randint(100, 999)}@{rng.choice(people.EMAIL_DOMAINS)}"
        address, _phone = _address(rng, international=False)
        method = {"type": "card", "brand": rng.choice(people.CARD_BRANDS),
                  "last_four": f"{rng.randint(0, 9999):04d}"}
    else:
        email, address = customer["email"], customer["address"]
        method = rng.choice(customer["payment_methods"])
    # Exchanges swap a size or colour, so those orders hold products that have options.
    items = _items(rng, products, popularity, exchangeable=status.startswith("exchange"),
                   country=address["country"])
    subtotal = sum((Decimal(str(i["unit_price"])) * i["quantity"] for i in items), Decimal(0))
    service = _service(rng, address)
    shipping = _shipping_cost(service, subtotal)
    total = subtotal + shipping
    timeline = _timeline(rng, status, service)
    placed = timeline["placed"]
    # Klarna splits orders of $50 to $1,000 (see the klarna-pay-later article).
    klarna = method["type"] == "card" and 50 <= total <= 1000 and rng.random() < 0.1
    payment_label = "Klarna" if klarna else method_label(method)
    order: dict[str, Any] = {
        "customer": customer["id"] if customer else None,
        "status": status,
        "placed_at": placed.isoformat(),
        "currency": "USD",
        "subtotal": float(subtotal),
        "shipping_cost": float(shipping),
        "total": float(total),
        "email": email.lower(),
        "shipping_address": address,
        "items": items,
        "shipments": _shipments(rng, status, service, address, items, timeline),
        "payments": [{"kind": "payment", "amount": float(total), "method": payment_label,
                      "created_at": placed.isoformat()}],
        "returns": [],
    }
    if status == "cancelled":
        cancelled = placed + timedelta(minutes=rng.randint(5, 55))
        order["payments"].append({"kind": "refund", "amount": float(total),
                                  "method": payment_label, "created_at": cancelled.isoformat()})
    if status in ("return requested", "returned", "refunded", "exchange requested", "exchanged"):
        _add_return(rng, order, status, timeline, products, payment_label)
    return order


def _items(rng: random.Random, products: list[dict[str, Any]], popularity: list[float],
           *, exchangeable: bool = False, country: str = "USA") -> list[dict[str, Any]]:
    lines = rng.choices((1, 2, 3, 4), (50, 30, 14, 6))[0]
    items: list[dict[str, Any]] = []
    used: set[str] = set()
    while len(items) < lines:
        product = rng.choices(products, popularity)[0]
        if exchangeable and len(product["variants"]) < 2:
            continue
        if country != "USA" and product["id"] in NO_EXPORT.get(country, NO_EXPORT["*"]):
            continue
        in_stock = [v for v in product["variants"] if v["available"]] or product["variants"]
        variant = rng.choice(in_stock)
        if variant["id"] in used:
            continue
        used.add(variant["id"])
        many = product["product_type"] in ("Socks", "Camp Kitchen")
        quantity = rng.choices((1, 2, 3), (60, 30, 10) if many else (88, 10, 2))[0]
        items.append({"product": product["id"], "variant": variant["id"], "name": product["title"],
                      "options": dict(variant["options"]), "quantity": quantity,
                      "unit_price": variant["price"]})
    return items


def _service(rng: random.Random, address: dict[str, str]) -> str:
    if address["country"] != "USA":
        return "international"
    if address["state"] in ("AK", "HI"):
        return "remote"
    return rng.choices(("standard", "expedited", "overnight"), (80, 15, 5))[0]


def _shipping_cost(service: str, subtotal: Decimal) -> Decimal:
    if service == "international":
        return Decimal(0) if subtotal >= FREE_INTERNATIONAL_FROM else SHIPPING["international"]
    price = SHIPPING["standard" if service == "remote" else service]
    # Over $75 the standard rate is free, and faster services get it as a discount.
    if subtotal >= FREE_STANDARD_FROM:
        price -= SHIPPING["standard"]
    return price.quantize(CENT)


def _timeline(rng: random.Random, status: str, service: str) -> dict[str, Any]:
    """Placed/shipped/estimated/delivered times consistent with ``status`` at REF."""
    low, high = TRANSIT[service]
    for _ in range(10_000):
        if status == "pending":
            placed = REF - timedelta(minutes=rng.randint(3, 55))
        elif status in ("processing", "shipped", "out for delivery"):
            placed = REF - timedelta(minutes=rng.randint(30, 60 * 24 * 16))
        elif status in ("return requested", "exchange requested"):
            placed = REF - timedelta(minutes=rng.randint(60 * 24 * 3, 60 * 24 * 25))
        elif status in ("returned", "refunded", "exchanged"):
            placed = REF - timedelta(minutes=rng.randint(60 * 24 * 35, 60 * 24 * 200))
        else:
            placed = REF - timedelta(minutes=rng.randint(60 * 24 * 2, 60 * 24 * 365))
        placed = placed.replace(second=0, microsecond=0)
        shipped = ship_time(placed, rng)
        estimated = add_business_days(shipped.replace(hour=20, minute=0), high)
        delivered = add_business_days(shipped, rng.randint(low, high)).replace(
            hour=rng.randint(9, 19), minute=rng.randrange(0, 60, 5))
        late = rng.random() < 0.12
        if late and status in ("shipped", "out for delivery"):
            delivered = add_business_days(delivered, rng.randint(1, 4))
        ok = {
            "pending": True,
            "cancelled": shipped > placed,
            "processing": shipped > REF and placed < REF - timedelta(minutes=60),
            "shipped": shipped <= REF and delivered.date() > REF.date(),
            "out for delivery": shipped <= REF and delivered.date() == REF.date(),
        }.get(status, delivered <= REF - timedelta(days=1))
        if ok:
            return {"placed": placed, "shipped": shipped, "estimated": estimated,
                    "delivered": delivered}
    raise RuntimeError(f"could not place a {status} order in time")  # pragma: no cover


def _carrier(rng: random.Random, service: str) -> str:
    if service == "international":
        return "DHL"
    if service == "remote":
        return "USPS"
    if service == "standard":
        return rng.choices(("UPS", "USPS", "FedEx"), (45, 30, 25))[0]
    return rng.choice(("UPS", "FedEx"))


def _shipments(rng: random.Random, status: str, service: str, address: dict[str, str],
               items: list[dict[str, Any]], t: dict[str, Any]) -> list[dict[str, Any]]:
    if status in ("pending", "cancelled") or (status == "processing" and rng.random() < 0.5):
        return []
    carrier = _carrier(rng, service)
    skus = [i["variant"] for i in items]
    parcels = [skus]
    if len(skus) >= 3 and rng.random() < 0.3:
        parcels = [skus[:1], skus[1:]]
    out = []
    for parcel in parcels:
        shipment = {
            "carrier": carrier,
            "tracking_number": carriers.tracking_number(rng, carrier, service),
            "status": "delivered",
            "shipped_at": t["shipped"].isoformat(),
            "estimated_delivery": t["estimated"].isoformat(),
            "delivered_at": t["delivered"].isoformat(),
            "item_ids": parcel,
        }
        if status == "processing":
            shipment.update(status="label_created", shipped_at=None, delivered_at=None)
        elif status == "shipped":
            delayed = t["estimated"] < REF
            shipment.update(status="exception" if delayed else "in_transit", delivered_at=None)
        elif status == "out for delivery":
            shipment.update(status="out_for_delivery", delivered_at=None)
        out.append(shipment)
    return out


def _add_return(rng: random.Random, order: dict[str, Any], status: str, t: dict[str, Any],
                products: list[dict[str, Any]], payment_label: str) -> None:
    delivered: datetime = t["delivered"]
    # Requests still open are recent; completed ones leave time for the parcel to arrive.
    open_request = status in ("return requested", "exchange requested")
    latest = REF - (timedelta(hours=2) if open_request else timedelta(days=10))
    latest = min(latest, delivered + timedelta(days=29))
    requested = delivered + (latest - delivered) * rng.uniform(0.05, 1.0)
    requested = requested.replace(second=0, microsecond=0)
    lines = order["items"]
    exchange = status.startswith("exchange")
    chosen = rng.sample(lines, 1 if exchange else rng.randint(1, len(lines)))
    value = sum((Decimal(str(i["unit_price"])) * i["quantity"] for i in chosen), Decimal(0))
    ret: dict[str, Any] = {
        "kind": "exchange" if exchange else "return",
        "status": "requested",
        "reason": rng.choice(people.EXCHANGE_REASONS if exchange else people.RETURN_REASONS),
        "item_ids": [i["variant"] for i in chosen],
        "requested_at": requested.isoformat(),
        "refund_amount": None if exchange else float(value),
    }
    received = requested + timedelta(days=rng.randint(4, 8))
    if status == "returned":
        ret["status"] = "received"
    elif status == "refunded":
        ret["status"] = "refunded"
        refunded = min(received + timedelta(days=rng.randint(1, 3)), REF - timedelta(hours=1))
        order["payments"].append({"kind": "refund", "amount": float(value),
                                  "method": payment_label, "created_at": refunded.isoformat()})
    elif status == "exchanged":
        ret["status"] = "received"
        carrier = order["shipments"][0]["carrier"]
        order["shipments"].append(
            _replacement(rng, carrier, chosen[0], products, requested)
        )
    order["returns"].append(ret)


def _replacement(rng: random.Random, carrier: str, item: dict[str, Any],
                 products: list[dict[str, Any]], requested: datetime) -> dict[str, Any]:
    """The parcel with the new size/colour, sent when the return was first scanned."""
    product = next(p for p in products if p["id"] == item["product"])
    new = rng.choice([v for v in product["variants"] if v["id"] != item["variant"]])
    shipped = ship_time(requested + timedelta(days=1), rng)
    delivered = add_business_days(shipped, rng.randint(5, 7))
    done = delivered <= REF
    return {
        "carrier": carrier,
        "tracking_number": carriers.tracking_number(rng, carrier, "standard"),
        "status": "delivered" if done else "in_transit",
        "shipped_at": shipped.isoformat(),
        "estimated_delivery": add_business_days(shipped.replace(hour=20, minute=0), 7).isoformat(),
        "delivered_at": delivered.isoformat() if done else None,
        "item_ids": [new["id"]],
    }
