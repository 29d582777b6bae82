"""Alembic environment: uses a connection handed in by hetex, or opens one from the configured URL."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from exchange.settings import DEFAULT_DATABASE_URL, normalize_database_url
from exchange.storage.engine import make_engine
from exchange.storage.models import Base

target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_configure_and_run)
    await engine.dispose()


def run() -> None:
    """Entry point Alembic calls."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("HETEX_DATABASE_URL", DEFAULT_DATABASE_URL)
    asyncio.run(_run_online(normalize_database_url(url)))


run()
