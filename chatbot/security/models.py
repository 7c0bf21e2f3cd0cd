"""The ``security_throttles`` table: one row per throttled key (revision 0005)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from chatbot.storage.clock import utcnow
from chatbot.storage.db import Base


class SecurityThrottle(Base):
    """Failures of one key (a claimed email, an order, an address, an account + address).

    ``key`` is the SHA-256 of the scope and the value, so the table holds no email
    addresses or IPs in clear. ``failures`` counts the current window (attempts in
    flight count as failures until they are settled); ``locked_until`` is the end of the
    current backoff or lockout; ``strikes`` how many times the key hit its limit (each
    lockout is twice as long as the one before).
    """

    __tablename__ = "security_throttles"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(32))
    failures: Mapped[int] = mapped_column(default=0)
    window_start: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    strikes: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
