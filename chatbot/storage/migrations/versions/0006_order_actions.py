"""order actions: proposals, the append-only audit log, and the order fields actions write

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 13:00:00

Issue #19: cancel / modify / return / exchange with the shopper's confirmation. Orders
get ``cancel_reason``; order lines keep the positions of their units in the source's
line list (τ-bench repeats a line per unit); returns get the exchange's new items, the
payment method and the price difference. ``action_audit`` refuses UPDATEs by trigger.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("cancel_reason", sa.String(length=100), nullable=True))
    with op.batch_alter_table("order_items") as batch:
        batch.add_column(
            sa.Column("positions", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    with op.batch_alter_table("returns") as batch:
        batch.add_column(
            sa.Column("new_item_ids", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch.add_column(
            sa.Column("payment_method", sa.String(length=100), nullable=False,
                      server_default="")
        )
        batch.add_column(sa.Column("price_difference", sa.Numeric(12, 2), nullable=True))

    op.create_table(
        "action_proposals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("verified_orders", sa.JSON(), nullable=False),
        sa.Column("order_number", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.String(length=20), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"],
                                name=op.f("fk_action_proposals_store_id_stores"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name=op.f("fk_action_proposals_customer_id_customers"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_proposals")),
        sa.UniqueConstraint("public_id", name=op.f("uq_action_proposals_public_id")),
    )
    with op.batch_alter_table("action_proposals") as batch:
        batch.create_index(batch.f("ix_action_proposals_store_id"), ["store_id"])
        batch.create_index(batch.f("ix_action_proposals_conversation_id"), ["conversation_id"])
        batch.create_index(batch.f("ix_action_proposals_customer_id"), ["customer_id"])
        batch.create_index(batch.f("ix_action_proposals_order_number"), ["order_number"])
        batch.create_index("ix_action_proposals_store_status", ["store_id", "status"])

    op.create_table(
        "action_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("action_id", sa.String(length=40), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=20), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("event", sa.String(length=30), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("order_number", sa.String(length=100), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"],
                                name=op.f("fk_action_audit_store_id_stores"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_audit")),
    )
    with op.batch_alter_table("action_audit") as batch:
        batch.create_index(batch.f("ix_action_audit_store_id"), ["store_id"])
        batch.create_index(batch.f("ix_action_audit_action_id"), ["action_id"])
        batch.create_index(batch.f("ix_action_audit_created_at"), ["created_at"])
        batch.create_index("ix_action_audit_store_order", ["store_id", "order_number"])

    # Append-only, enforced by the database too: an UPDATE of an audit row fails.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION action_audit_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'action_audit is append-only'; END; $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER action_audit_no_update BEFORE UPDATE ON action_audit "
            "FOR EACH ROW EXECUTE FUNCTION action_audit_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER action_audit_no_update BEFORE UPDATE ON action_audit "
            "BEGIN SELECT RAISE(ABORT, 'action_audit is append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS action_audit_no_update ON action_audit")
        op.execute("DROP FUNCTION IF EXISTS action_audit_append_only()")
    op.drop_table("action_audit")
    op.drop_table("action_proposals")
    with op.batch_alter_table("returns") as batch:
        batch.drop_column("price_difference")
        batch.drop_column("payment_method")
        batch.drop_column("new_item_ids")
    with op.batch_alter_table("order_items") as batch:
        batch.drop_column("positions")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("cancel_reason")
