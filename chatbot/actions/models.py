"""Tables of the order actions: proposals the shopper confirms, and the audit log.

A proposal is what the bot offers ("Cancel order #W123 ... refunded to ..."); its
``status`` moves ``proposed`` -> ``executed`` | ``declined`` | ``failed`` |
``awaiting_approval`` | ``expired`` with conditional UPDATEs, so a double yes or a second
process never acts twice. The audit log is append-only: rows are inserted, never updated
(an ORM guard here, and a trigger in the migration).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from chatbot.storage.clock import utcnow
from chatbot.storage.db import Base

PROPOSED = "proposed"
EXECUTED = "executed"
DECLINED = "declined"
FAILED = "failed"
AWAITING_APPROVAL = "awaiting_approval"
EXPIRED = "expired"
STATUSES = (PROPOSED, EXECUTED, DECLINED, FAILED, AWAITING_APPROVAL, EXPIRED)


def new_action_id() -> str:
    """A random public action id such as ``act_3vQ9k1mZp0xY7bW2Lr5s``: unguessable."""
    return f"act_{secrets.token_urlsafe(15)}"


class ActionProposal(Base):
    """One proposed order action, waiting for (or past) the shopper's yes."""

    __tablename__ = "action_proposals"
    __table_args__ = (Index("ix_action_proposals_store_status", "store_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # What clients see (``action.id`` on the wire); the integer id never leaves the server.
    public_id: Mapped[str] = mapped_column(String(40), unique=True, default=new_action_id)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), index=True)
    # The conversation's public id ("" outside a conversation: CLI, τ replay).
    conversation_id: Mapped[str] = mapped_column(String(40), default="", index=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), default=None, index=True
    )
    # Order numbers a guest proved in the conversation (the proposal acts for them only).
    verified_orders: Mapped[list[str]] = mapped_column(JSON, default=list)
    order_number: Mapped[str] = mapped_column(String(100), default="", index=True)
    kind: Mapped[str] = mapped_column(String(40))
    # The validated arguments (order, items, payment method, address ...).
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Customer-facing text and the exact effects listed to the shopper.
    summary: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(30), default=PROPOSED)
    reason: Mapped[str] = mapped_column(Text, default="")
    # Who proposed it (bot, agent, system) and who decided (customer, agent:<email> ...).
    proposed_by: Mapped[str] = mapped_column(String(20), default="bot")
    decided_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)


class ActionAudit(Base):
    """One line of the append-only audit log of order actions."""

    __tablename__ = "action_audit"
    __table_args__ = (Index("ix_action_audit_store_order", "store_id", "order_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), index=True)
    action_id: Mapped[str] = mapped_column(String(40), default="", index=True)
    conversation_id: Mapped[str] = mapped_column(String(40), default="")
    # bot | agent | customer | system
    actor: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(String(200), default="")
    # proposed | refused | executed | declined | failed | awaiting_approval | approved |
    # rejected | expired | config
    event: Mapped[str] = mapped_column(String(30))
    kind: Mapped[str] = mapped_column(String(40), default="")
    order_number: Mapped[str] = mapped_column(String(100), default="")
    customer: Mapped[str] = mapped_column(String(200), default="")
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # {"allowed": bool, "reason": str, "mode": "auto" | "approval" | "off"}
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


@event.listens_for(ActionAudit, "before_update")
def _no_update(*_args: Any) -> None:
    raise RuntimeError("the action audit log is append-only")


@event.listens_for(ActionAudit, "before_delete")
def _no_delete(*_args: Any) -> None:
    raise RuntimeError("the action audit log is append-only")
