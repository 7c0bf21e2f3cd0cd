"""Tracking numbers in each carrier's real format, check digits included (demo data)."""

from __future__ import annotations

import random
import string

# A fixed, made-up UPS shipper account for the demo store.
UPS_SHIPPER = "8W4E21"
UPS_SERVICE = {"standard": "03", "expedited": "02", "overnight": "01"}


def ups(rng: random.Random, service: str) -> str:
    """``1Z`` + shipper (6) + service (2) + package (7) + check digit: 18 characters."""
    body = UPS_SHIPPER + UPS_SERVICE.get(service, "03") + "".join(rng.choices(string.digits, k=7))
    total = 0
    for position, char in enumerate(body, start=1):
        value = int(char) if char.isdigit() else (ord(char) - 63) % 10
        total += value * (2 if position % 2 == 0 else 1)
    return f"1Z{body}{(10 - total % 10) % 10}"


def fedex(rng: random.Random) -> str:
    """12 digits; the last is the mod-11 check digit over weights 1, 3, 7 from the right."""
    digits = [rng.randint(0, 9) for _ in range(11)]
    digits[0] = rng.randint(2, 9)  # no leading zero, as on real labels
    weights = (1, 3, 7)
    total = sum(d * weights[i % 3] for i, d in enumerate(reversed(digits)))
    return "".join(map(str, digits)) + str(total % 11 % 10)


def usps(rng: random.Random) -> str:
    """22-digit IMpb number starting 9400 1, with its mod-10 check digit."""
    digits = [9, 4, 0, 0, 1] + [rng.randint(0, 9) for _ in range(16)]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def dhl(rng: random.Random) -> str:
    """10-digit DHL Express waybill: 9 digits plus their value mod 7."""
    body = rng.randint(100_000_000, 999_999_999)
    return f"{body}{body % 7}"


def tracking_number(rng: random.Random, carrier: str, service: str) -> str:
    if carrier == "UPS":
        return ups(rng, service)
    if carrier == "FedEx":
        return fedex(rng)
    if carrier == "USPS":
        return usps(rng)
    if carrier == "DHL":
        return dhl(rng)
    raise ValueError(f"unknown carrier {carrier!r}")
