"""Alembic from empty equals the models, and upgrade -> downgrade -> upgrade works, on both databases."""

from __future__ import annotations

from collections.abc import Callable

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from exchange.storage.engine import make_engine
from exchange.storage.migrate import current_revision, downgrade, head_revision, upgrade
from exchange.storage.models import Base


def _diff(sync_conn: object) -> list[object]:
    ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})  # type: ignore[arg-type]
    return list(compare_metadata(ctx, Base.metadata))


async def test_upgrade_head_equals_models_and_round_trips(fresh_db_factory: Callable[[], str]) -> None:
    url = fresh_db_factory()  # already upgraded to head
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            assert await current_revision(conn) == head_revision()
            assert await conn.run_sync(_diff) == []
        async with engine.begin() as conn:
            await downgrade(conn, "base")
        async with engine.connect() as conn:
            assert await current_revision(conn) is None
            tables = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
            assert set(tables) <= {"alembic_version"}
        async with engine.begin() as conn:
            await upgrade(conn, "head")
        async with engine.connect() as conn:
            assert await current_revision(conn) == head_revision()
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
