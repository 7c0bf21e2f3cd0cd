"""Time helpers shared by every table: timestamps are naive UTC in the database."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now in UTC, without tzinfo (the form every ``DateTime`` column stores)."""
    return datetime.now(UTC).replace(tzinfo=None)
