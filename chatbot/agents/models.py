"""Tables for support agents, their store access and their console sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chatbot.storage.clock import utcnow
from chatbot.storage.db import Base
from knowledge_base.models import Store


class Agent(Base):
    """A person on the store's support team who logs in to the console."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-cased so logins are case-insensitive on every database.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # argon2id PHC string ("$argon2id$v=19$m=...,t=...,p=...$salt$hash").
    password_hash: Mapped[str] = mapped_column(String(300))
    # Admins manage agents and see every store.
    is_admin: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)

    store_links: Mapped[list[AgentStore]] = relationship(
        back_populates="agent", cascade="all, delete-orphan", order_by="AgentStore.store_id"
    )
    sessions: Mapped[list[AgentSession]] = relationship(
        back_populates="agent", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def display_name(self) -> str:
        return self.name or self.email.split("@", 1)[0]


class AgentStore(Base):
    """Grants one agent access to one store's conversations."""

    __tablename__ = "agent_stores"

    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    store_id: Mapped[int] = mapped_column(
        ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True, index=True
    )

    agent: Mapped[Agent] = relationship(back_populates="store_links")
    store: Mapped[Store] = relationship()


class AgentSession(Base):
    """A console login. Only the SHA-256 of the token is stored, never the token."""

    __tablename__ = "agent_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")

    agent: Mapped[Agent] = relationship(back_populates="sessions")


class AgentRead(Base):
    """How far one agent has read one conversation: drives the inbox's unread counts."""

    __tablename__ = "agent_reads"

    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    last_read_seq: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
