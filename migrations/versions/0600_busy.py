"""rounds: the allocations a round dropped at commit, each with its reason

Revision ID: 0600_busy
Revises: 0100_exchange_key_lifecycle
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0600_busy"
down_revision = "0100_exchange_key_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("dropped", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("dropped")
