"""singleton lease with a fencing epoch; audit export jobs get a job lease (owner, expiry, attempts).

Revision ID: 0920_leases
Revises: 0800_console
Create Date: 2026-12-03 13:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0920_leases"
down_revision = "0800_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("acquired_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    with op.batch_alter_table("audit_exports") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.BigInteger(), nullable=True))
        batch.create_index("ix_audit_exports_status_lease_expires_at", ["status", "lease_expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_exports") as batch:
        batch.drop_index("ix_audit_exports_status_lease_expires_at")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
        batch.drop_column("attempts")
    op.drop_table("leases")
