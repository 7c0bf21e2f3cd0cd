"""agents: console accounts, their store access, hashed session tokens, read marks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 06:44:10.094675
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    ref_table = target.split(".")[0]
    return sa.ForeignKeyConstraint(
        [column], [target], name=op.f(f"fk_{table}_{column}_{ref_table}"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=300), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("email", name=op.f("uq_agents_email")),
    )
    op.create_table(
        "agent_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        _fk("agent_sessions", "agent_id", "agents.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_agent_sessions_token_hash")),
    )
    with op.batch_alter_table("agent_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_sessions_agent_id"), ["agent_id"])
        batch_op.create_index(batch_op.f("ix_agent_sessions_expires_at"), ["expires_at"])

    op.create_table(
        "agent_stores",
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        _fk("agent_stores", "agent_id", "agents.id"),
        _fk("agent_stores", "store_id", "stores.id"),
        sa.PrimaryKeyConstraint("agent_id", "store_id", name=op.f("pk_agent_stores")),
    )
    with op.batch_alter_table("agent_stores", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_stores_store_id"), ["store_id"])

    op.create_table(
        "agent_reads",
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("last_read_seq", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        _fk("agent_reads", "agent_id", "agents.id"),
        _fk("agent_reads", "conversation_id", "conversations.id"),
        sa.PrimaryKeyConstraint("agent_id", "conversation_id", name=op.f("pk_agent_reads")),
    )
    with op.batch_alter_table("agent_reads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_reads_conversation_id"), ["conversation_id"])


def downgrade() -> None:
    with op.batch_alter_table("agent_reads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_reads_conversation_id"))
    op.drop_table("agent_reads")
    with op.batch_alter_table("agent_stores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_stores_store_id"))
    op.drop_table("agent_stores")
    with op.batch_alter_table("agent_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_sessions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_agent_sessions_agent_id"))
    op.drop_table("agent_sessions")
    op.drop_table("agents")
