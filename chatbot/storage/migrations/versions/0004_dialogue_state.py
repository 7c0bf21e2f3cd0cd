"""dialogue state: what the bot knows about a conversation, kept between turns

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 12:50:00

The answering pipeline keeps a small structured state per conversation (order and
product in focus, what verification still needs, the last reply's fingerprint; see
docs/answering.md). It lives in the database so any server process can continue a
conversation.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("dialogue", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("dialogue")
