"""clearing rounds and their posted prices

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 16:45:17.628807
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
        "rounds",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("market_now", sa.BigInteger(), nullable=True),
        sa.Column("snapshot_hash", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=16), nullable=True),
        sa.Column("pricing_rule", sa.Text(), nullable=True),
        sa.Column("orders_count", sa.Integer(), nullable=False),
        sa.Column("offers_count", sa.Integer(), nullable=False),
        sa.Column("contracts_count", sa.Integer(), nullable=False),
        sa.Column("matched_orders", sa.Integer(), nullable=False),
        sa.Column("matched_devices", sa.Integer(), nullable=False),
        sa.Column("dropped_allocations", sa.Integer(), nullable=False),
        sa.Column("expired_orders", sa.Integer(), nullable=False),
        sa.Column("welfare_fen", sa.BigInteger(), nullable=True),
        sa.Column("lp_bound_fen", sa.BigInteger(), nullable=True),
        sa.Column("gap", sa.String(length=24), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.Column("audit", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds")),
    )
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.create_index("ix_rounds_started_at", ["started_at"], unique=False)
        batch_op.create_index("ix_rounds_status", ["status"], unique=False)

    op.create_table(
        "round_prices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("round_id", sa.String(length=36), nullable=False),
        sa.Column("cleared_at", sa.BigInteger(), nullable=False),
        sa.Column("region", sa.String(length=8), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("gang", sa.Integer(), nullable=False),
        sa.Column("lease_slots", sa.Integer(), nullable=False),
        sa.Column("start_at", sa.BigInteger(), nullable=False),
        sa.Column("buyer_price", sa.String(length=32), nullable=False),
        sa.Column("buyer_price_fen", sa.BigInteger(), nullable=False),
        sa.Column("min_ask_fen", sa.BigInteger(), nullable=False),
        sa.Column("rent", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"], name=op.f("fk_round_prices_round_id_rounds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_round_prices")),
    )
    with op.batch_alter_table("round_prices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_round_prices_region_family_cleared_at", ["region", "family", "cleared_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_round_prices_round_id"), ["round_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("round_prices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_round_prices_round_id"))
        batch_op.drop_index("ix_round_prices_region_family_cleared_at")

    op.drop_table("round_prices")
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.drop_index("ix_rounds_status")
        batch_op.drop_index("ix_rounds_started_at")

    op.drop_table("rounds")
