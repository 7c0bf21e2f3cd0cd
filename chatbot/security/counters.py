"""Process-wide security counters, rendered at ``/metrics`` by every server of the process.

They live here, not in :class:`chatbot.server.metrics.ServerMetrics`, because the
answering pipeline (which verifies guests) does not know the server it runs in.
"""

from __future__ import annotations

from chatbot.server.metrics import Counter

GUEST_VERIFICATION = Counter(
    "chatbot_guest_verifications_total",
    "Guest order verifications (order number + email), by outcome: verified, failed, "
    "refused (a limit was hit; the order was not looked up).",
    ["outcome"],
)
GUEST_VERIFICATION_REFUSED = Counter(
    "chatbot_guest_verification_refused_total",
    "Guest verifications refused, by the limit that refused them: conversation, "
    "address, email, order.",
    ["scope"],
)
CONSOLE_LOGINS = Counter(
    "chatbot_console_logins_total",
    "Console sign-ins by outcome: ok, failed, locked (account+address backoff), "
    "rate_limited (per-address/per-email rate), busy (password checks at capacity).",
    ["outcome"],
)
WAITING_CAPPED = Counter(
    "chatbot_handoffs_refused_total",
    "Handoffs refused because the address created too many waiting conversations this hour.",
)

ALL = (GUEST_VERIFICATION, GUEST_VERIFICATION_REFUSED, CONSOLE_LOGINS, WAITING_CAPPED)
