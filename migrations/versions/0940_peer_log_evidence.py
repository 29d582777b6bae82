"""peer log evidence: the two signed checkpoints behind an `inconsistent` flag, kept until re-verified.

Revision ID: 0940_peer_log_evidence
Revises: 0920_leases
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0940_peer_log_evidence"
down_revision = "0920_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "peer_log_evidence",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("peer_authority", sa.String(length=8), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("kept_size", sa.BigInteger(), nullable=True),
        sa.Column("kept_root", sa.LargeBinary(length=32), nullable=True),
        sa.Column("kept_note", sa.Text(), nullable=True),
        sa.Column("seen_size", sa.BigInteger(), nullable=True),
        sa.Column("seen_root", sa.LargeBinary(length=32), nullable=True),
        sa.Column("seen_note", sa.Text(), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.Column("resolved_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["peer_authority"], ["peers.authority"], name=op.f("fk_peer_log_evidence_peer_authority_peers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_peer_log_evidence")),
    )
    op.create_index(
        op.f("ix_peer_log_evidence_peer_authority"), "peer_log_evidence", ["peer_authority"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_peer_log_evidence_peer_authority"), table_name="peer_log_evidence")
    op.drop_table("peer_log_evidence")
