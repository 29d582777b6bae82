"""orders.filled_scu: SCU (A100-equivalents) filled so far of an SCU order, as decimal text (cross-exchange
fills are tracked per order so several exchanges' pools never over- or under-fill it).

Revision ID: 0941_scu_fill
Revises: 0940_peer_log_evidence
Create Date: 2026-12-03 14:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0941_scu_fill"
down_revision = "0940_peer_log_evidence"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("filled_scu", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_column("filled_scu")
