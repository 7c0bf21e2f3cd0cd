"""Abuse controls that must hold across server processes (issue #18).

- :mod:`~chatbot.security.throttle`: failure counters with backoff and lockout, kept in the
  database (``security_throttles``, revision 0005) with an in-memory cache of locks.
- :mod:`~chatbot.security.guest_verification`: limits on guests proving an order
  (order number + email) per conversation, per address, per email and per order.
- :mod:`~chatbot.security.login`: console sign-in: password checks in a bounded pool off
  the database thread, lockout by (account, address) with backoff.
- :mod:`~chatbot.security.files`: owner-only permissions for the data directory, the
  database and secret files.
- :mod:`~chatbot.security.counters`: process-wide counters shown at ``/metrics``.
"""
