"""Identifying a customer in chat the way the store's policy says (issue #19).

A store lists how a shopper who is not signed in may be identified, in its settings::

    {"identify_by": ["email", "name_zip"]}      # τ-bench's retail policy (wiki.md)
    {"identify_by": ["order_email"]}            # the default: a guest proves one order

- ``order_email``: the order number and the checkout email prove that one order (the
  guest flow in ``pipeline._guest_plan``; the shopper stays a guest).
- ``email``: the account's email identifies the customer.
- ``name_zip``: first and last name plus the zip code of the account's address.

An identified customer is kept in the dialogue state (``customer_id``) and acts as a
signed-in one for the rest of the conversation: order lookups and actions are scoped to
that customer. Every attempt goes through the guest-verification throttle
(:mod:`chatbot.security.guest_verification`: per claimed email or name, per conversation,
per client address; backoff, then lockout), so identities cannot be guessed; a failure
says the same whether or not the email exists.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from chatbot.actions.policy import (
    DEFAULT_IDENTIFY_BY,
    IDENTIFY_METHODS,
    IDENTIFY_SETTING,
    identify_by,
)
from chatbot.errors import ConfigError
from chatbot.security import counters, guest_verification
from chatbot.security.throttle import Key
from chatbot.storage.db import transaction
from knowledge_base.models import Customer, Store

if TYPE_CHECKING:
    from chatbot.storage.db import Database
    from chatbot.types import AnswerRequest

# The setting and its check live with the other per-store action settings.
SETTING = IDENTIFY_SETTING
METHODS = IDENTIFY_METHODS
DEFAULT = DEFAULT_IDENTIFY_BY

ASK = ("I can help with that. First I need to find your account: please tell me the email "
       "address of your account, or your first and last name and your zip code.")
# Asked again (an order number alone, say): the same request in other words, so a
# reply never repeats the one before it.
ASK_AGAIN = ("Before I can look at an order, I still need to find your account: please send "
             "the email address of your account, or your first and last name and your zip "
             "code.")
FAILED = ("I couldn't find an account with those details. Please check them and try again "
          "(your email address, or your first and last name and zip code), or ask for a "
          "person.")
FOUND = "Thank you, {name}: I've found your account."
FOUND_ASK = FOUND + " How can I help you?"

_NAME = re.compile(
    r"\b(?i:my name is|name'?s|i am|i'm|this is|name:)\s+([A-Z][a-zA-Z'-]+)\s+"
    r"([A-Z][a-zA-Z'-]+)")
_ZIP = re.compile(r"\b(?:zip|zip ?code|postal code|postcode)\b\D{0,12}(\d{5})\b", re.IGNORECASE)


def store_methods(db: Database, store_id: int) -> tuple[str, ...]:
    with db.sessions() as session:
        settings = session.scalar(select(Store.settings).where(Store.id == store_id))
    try:
        return identify_by(settings)
    except ConfigError:
        return DEFAULT


def parse_name_zip(message: str) -> tuple[str, str, str] | None:
    """("Olivia", "Ito", "80218") from "My name is Olivia Ito and my zip code is 80218"."""
    name, zipped = _NAME.search(message), _ZIP.search(message)
    if name is None or zipped is None:
        return None
    return name.group(1), name.group(2), zipped.group(1)


def _keys(request: AnswerRequest, claim: str) -> list[Key]:
    keys = [Key(guest_verification.EMAIL, f"{request.store_id}:{claim}")]
    if request.conversation_key:
        keys.append(Key(guest_verification.CONVERSATION, request.conversation_key))
    if request.client_ip:
        keys.append(Key(guest_verification.ADDRESS, request.client_ip))
    return keys


def identify(
    db: Database,
    request: AnswerRequest,
    *,
    email: str | None = None,
    name_zip: tuple[str, str, str] | None = None,
) -> tuple[Customer | None, bool]:
    """The customer these details identify, and whether a limit refused the attempt.

    (None, False): no such customer (the same for an unknown email and a wrong zip);
    (None, True): refused by the throttle, nothing was looked up.
    """
    if email:
        claim = email.strip().lower()
    elif name_zip:
        claim = "name:" + " ".join(name_zip[:2]).lower()
    else:
        return None, False
    keys = _keys(request, claim)
    throttle = guest_verification.throttle
    with transaction(db.sessions) as session:
        refusal = throttle.reserve(session, keys)
    if refusal is not None:
        counters.GUEST_VERIFICATION.inc(1, "refused")
        counters.GUEST_VERIFICATION_REFUSED.inc(
            1, guest_verification.SCOPES.get(refusal.scope, refusal.scope))
        return None, True
    found: Customer | None = None
    try:
        with db.sessions() as session:
            if email:
                found = session.scalars(select(Customer).where(
                    Customer.store_id == request.store_id,
                    func.lower(Customer.email) == claim)).first()
            elif name_zip:
                first, last, zipped = name_zip
                rows = session.scalars(select(Customer).where(
                    Customer.store_id == request.store_id,
                    func.lower(Customer.first_name) == first.lower(),
                    func.lower(Customer.last_name) == last.lower()))
                found = next((c for c in rows
                              if str((c.address or {}).get("zip", "")).strip() == zipped), None)
            if found is not None:
                session.expunge(found)
    finally:
        with transaction(db.sessions) as session:
            throttle.settle(session, keys, failed=found is None)
    counters.GUEST_VERIFICATION.inc(1, "verified" if found is not None else "failed")
    return found, False
