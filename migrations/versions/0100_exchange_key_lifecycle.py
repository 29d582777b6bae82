"""exchange key lifecycle: at most one `current` row in exchange_keys (partial unique index).

The database is the authority on which exchange key signs (specs/signing.md section 8); this index makes
"one current key" a database guarantee, so two processes racing to initialise or rotate cannot both win.

Revision ID: 0100_exchange_key_lifecycle
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0100_exchange_key_lifecycle"
down_revision = "0007"
branch_labels = None
depends_on = None

CURRENT = sa.text("status = 'current'")


def upgrade() -> None:
    op.create_index(
        "uq_exchange_keys_one_current",
        "exchange_keys",
        ["status"],
        unique=True,
        postgresql_where=CURRENT,
        sqlite_where=CURRENT,
    )


def downgrade() -> None:
    op.drop_index("uq_exchange_keys_one_current", table_name="exchange_keys")
