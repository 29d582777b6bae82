"""Run Alembic programmatically: upgrade, downgrade, current and head, on a live async connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at hetex's migrations, independent of the working directory."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest revision shipped with this code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _run(sync_conn: Any, fn: Any, *args: Any) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    fn(cfg, *args)


async def upgrade(conn: AsyncConnection, revision: str = "head") -> None:
    """Upgrade the database behind `conn` to `revision`."""
    await conn.run_sync(_run, command.upgrade, revision)


async def downgrade(conn: AsyncConnection, revision: str) -> None:
    """Downgrade the database behind `conn` to `revision` ('base' empties it)."""
    await conn.run_sync(_run, command.downgrade, revision)


async def current_revision(conn: AsyncConnection) -> str | None:
    """The revision the database is at (None when never migrated)."""

    def _current(sync_conn: Any) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    return await conn.run_sync(_current)


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade in one transaction (PostgreSQL DDL is transactional; SQLite batch mode copes)."""
    async with engine.begin() as conn:
        await upgrade(conn, revision)


async def engine_revision(engine: AsyncEngine) -> str | None:
    """Current revision of the database behind `engine`."""
    async with engine.connect() as conn:
        return await current_revision(conn)
