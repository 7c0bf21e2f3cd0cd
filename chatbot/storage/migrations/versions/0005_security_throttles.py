"""security throttles: failure counters, backoff and lockouts shared by all processes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 12:45:00

Guest order verification (per conversation, address, claimed email and order) and
console sign-in (per account and address) count failures here, so the limits hold when
several server processes share the database (issue #18). Keys are SHA-256 hashes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_throttles",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("strikes", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_security_throttles")),
    )
    with op.batch_alter_table("security_throttles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_security_throttles_updated_at"), ["updated_at"])


def downgrade() -> None:
    with op.batch_alter_table("security_throttles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_throttles_updated_at"))
    op.drop_table("security_throttles")
