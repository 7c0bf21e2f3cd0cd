"""Conversation tables: conversations, messages, the event log and guest verifications.

The event log is what the sockets replay: every stored server event has a per-conversation
``seq`` (unique with the conversation id), allocated from ``Conversation.last_seq`` inside
the transaction that inserts it. Messages are the transcript in readable form (one row per
shopper message, bot reply, agent message or internal note); events are the wire history.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chatbot.storage.clock import utcnow
from chatbot.storage.db import Base

# Ownership states (see chatbot.conversations.ownership).
BOT = "bot"
WAITING = "waiting"
AGENT = "agent"
RESOLVED = "resolved"


def new_public_id(prefix: str) -> str:
    """A random, URL-safe public id such as ``c_8Jq2vYw1nK3xT0aB``."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"


class Conversation(Base):
    """One chat between a shopper and the store (bot and agents)."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_store_state", "store_id", "state"),
        Index("ix_conversations_store_last", "store_id", "last_message_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # What clients see; the integer id never leaves the server.
    public_id: Mapped[str] = mapped_column(
        String(40), unique=True, default=lambda: new_public_id("c")
    )
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), index=True)
    # The verified customer; None for a guest.
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), default=None, index=True
    )
    # SHA-256 of the guest's resume token (the token itself is never stored).
    resume_hash: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(20), default=BOT)
    # Optimistic concurrency: every ownership change is UPDATE ... WHERE version = :v.
    version: Mapped[int] = mapped_column(default=0)
    # The agent owning the conversation (agents live in revision 0003; no FK here).
    agent_id: Mapped[int | None] = mapped_column(default=None)
    agent_name: Mapped[str] = mapped_column(String(100), default="")
    # Highest seq handed out in the event log.
    last_seq: Mapped[int] = mapped_column(default=0)
    handoff_reason: Mapped[str] = mapped_column(String(500), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    csat_rating: Mapped[int | None] = mapped_column(default=None)
    csat_comment: Mapped[str] = mapped_column(Text, default="")
    # The answering pipeline's dialogue state (chatbot.answering.dialogue), as JSON.
    dialogue: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(default=utcnow)

    messages: Mapped[list[ChatMessage]] = relationship(
        back_populates="conversation", cascade="all, delete-orphan", order_by="ChatMessage.id"
    )


class ChatMessage(Base):
    """One transcript entry: a shopper message, a bot reply, an agent message or a note."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "role", "public_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    # The client's message id (shopper), the reply id (bot), or a server id (agent, note).
    public_id: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))  # shopper | bot | agent | system
    text: Mapped[str] = mapped_column(Text, default="")
    # Agent notes: never sent to the shopper.
    internal: Mapped[bool] = mapped_column(default=False)
    # complete | streaming | interrupted (bot replies only go through streaming).
    status: Mapped[str] = mapped_column(String(20), default="complete")
    sources: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    handoff: Mapped[bool] = mapped_column(default=False)
    in_reply_to: Mapped[str | None] = mapped_column(String(100), default=None)
    agent_id: Mapped[int | None] = mapped_column(default=None)
    author: Mapped[str] = mapped_column(String(100), default="")
    # The event that carried this message (ack, done, agent_message).
    seq: Mapped[int | None] = mapped_column(default=None)
    rating: Mapped[int | None] = mapped_column(default=None)  # shopper feedback: 1 / -1
    feedback_comment: Mapped[str] = mapped_column(Text, default="")
    # Why the pipeline answered as it did ("grounded", "no_match", ...); bot replies only.
    reason: Mapped[str] = mapped_column(String(50), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class ConversationEvent(Base):
    """One stored server event of a conversation, in wire form, numbered by ``seq``."""

    __tablename__ = "conversation_events"
    __table_args__ = (UniqueConstraint("conversation_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column()
    kind: Mapped[str] = mapped_column(String(30))  # the wire ``type``: ack, token, done, ...
    # The event's fields except v, type and seq.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    internal: Mapped[bool] = mapped_column(default=False)
    reply_id: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GuestVerification(Base):
    """An order a guest proved in a conversation (order number + email)."""

    __tablename__ = "guest_verifications"
    __table_args__ = (UniqueConstraint("conversation_id", "order_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    order_number: Mapped[str] = mapped_column(String(100))
    verified_at: Mapped[datetime] = mapped_column(default=utcnow)
