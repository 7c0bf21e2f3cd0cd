"""Limits on guests proving an order (order number + checkout email), issue #18.

A guest who types an order number and an email gets that order's facts when they match.
Without limits, anyone who knows a customer's email could try order numbers until one
fits. Every attempt is therefore checked against four throttles, kept in the database so
that they hold across server processes (:mod:`chatbot.security.throttle`):

| key | failures allowed | then |
| --- | --- | --- |
| the claimed email (per store) | 5 per hour | locked 1 h, 2 h, 4 h ... 7 days |
| the order number (per store) | 5 per hour | the same |
| the conversation | 5 per hour | locked 1 h, 2 h, 4 h ... 24 h |
| the client address | 20 per hour | the same |

and from the third failure on the same keys wait 1, 2, 4 ... s before the next try
(exponential backoff). A refused attempt never looks the order up, and gets one fixed reply whatever
limit refused it; a wrong email and an unknown order number get the same
``VERIFY_FAILED`` reply as before. Outcomes are counted at ``/metrics``
(``chatbot_guest_verifications_total{outcome}``, ``..._refused_total{scope}``).

The pipeline calls :func:`verify` in place of ``orders.verify_guest_order`` (one marked
line in ``chatbot/answering/pipeline.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from chatbot.security import counters
from chatbot.security.throttle import Key, Policy, Refusal, Throttle
from chatbot.storage.db import transaction
from knowledge_base.orders import number_variants

if TYPE_CHECKING:
    from chatbot.storage.db import Database
    from chatbot.types import AnswerRequest

log = logging.getLogger(__name__)

T = TypeVar("T")

HOUR = timedelta(hours=1)
# The first two failures of a key are free (typos); then 1, 2, 4 ... s between tries.
# A claimed email or order that keeps failing is locked 1 h, 2 h, 4 h ... up to a week.
# Proving the order clears its order and conversation counters (a typo then the right email
# is a normal start); the email's and the address's counters only get the attempt back.
EMAIL = Policy("guest_email", limit=5, window=HOUR, free=2, max_lock=timedelta(days=7))
ORDER = Policy("guest_order", limit=5, window=HOUR, free=2, max_lock=timedelta(days=7),
               reset_on_success=True)
CONVERSATION = Policy("guest_conversation", limit=5, window=HOUR, free=2,
                      reset_on_success=True)
ADDRESS = Policy("guest_address", limit=20, window=HOUR, free=2)

# The reply to a refused attempt: the same whichever limit refused it, and it says
# nothing about the order or the email.
LOCKED_REPLY = (
    "I can't check more order details right now: there have been too many attempts. "
    "Please try again later, or ask for a person and our team will help you."
)
SCOPES = {
    EMAIL.scope: "email",
    ORDER.scope: "order",
    CONVERSATION.scope: "conversation",
    ADDRESS.scope: "address",
}

throttle = Throttle()


def keys_for(store_id: int, number: str, email: str, conversation: str | None,
             address: str | None) -> list[Key]:
    """The throttled keys of one attempt (store-scoped; emails and numbers normalised)."""
    variants = number_variants(number)
    order = variants[-1].lstrip("#").upper() if variants else number.strip().upper()
    keys = [
        Key(EMAIL, f"{store_id}:{email.strip().lower()}"),
        Key(ORDER, f"{store_id}:{order}"),
    ]
    if conversation:
        keys.append(Key(CONVERSATION, conversation))
    if address:
        keys.append(Key(ADDRESS, address))
    return keys


def verify(
    db: Database,
    request: AnswerRequest,
    number: str,
    email: str,
    check: Callable[[], T | None],
) -> tuple[T | None, Refusal | None]:
    """Run ``check()`` (the order lookup) only if no limit refuses; count the outcome.

    Returns ``(order or None, None)`` after a lookup, or ``(None, refusal)`` when a limit
    refused the attempt (the order was not looked up).
    """
    keys = keys_for(request.store_id, number, email, request.conversation_key,
                    getattr(request, "client_ip", "") or None)
    with transaction(db.sessions) as session:
        refusal = throttle.reserve(session, keys)
    if refusal is not None:
        counters.GUEST_VERIFICATION.inc(1, "refused")
        counters.GUEST_VERIFICATION_REFUSED.inc(1, SCOPES.get(refusal.scope, refusal.scope))
        log.info("guest verification refused in store %s (%s limit)", request.store_id,
                 SCOPES.get(refusal.scope, refusal.scope))
        return None, refusal
    found: Any = None
    try:
        found = check()
    finally:
        with transaction(db.sessions) as session:
            throttle.settle(session, keys, failed=found is None)
    counters.GUEST_VERIFICATION.inc(1, "verified" if found is not None else "failed")
    return found, None
