"""PostgreSQL: NOTIFY hetex_participant_keys with the key id whenever a participant row is updated or deleted, so
every serving process drops that key from its key cache at once (exchange/api/key_changes.py): a suspended key is
refused from the next request on, whichever process it reaches. SQLite has one serving process (nothing to do).

Revision ID: 0950_participant_key_notify
Revises: 0941_scu_fill
Create Date: 2026-12-04 16:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0950_participant_key_notify"
down_revision = "0941_scu_fill"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION hetex_participant_key_changed() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('hetex_participant_keys', OLD.key_id);
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER participants_key_changed AFTER UPDATE OR DELETE ON participants "
        "FOR EACH ROW EXECUTE FUNCTION hetex_participant_key_changed()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER participants_key_changed ON participants")
    op.execute("DROP FUNCTION hetex_participant_key_changed()")
