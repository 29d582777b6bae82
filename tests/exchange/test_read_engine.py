"""The SQLite read engine of clearing rounds (exchange.storage.engine.make_read_engine): its transactions see
one consistent snapshot, never take the write lock (the writer commits while a round reads), and cannot write."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from exchange.storage.engine import make_engine, make_read_engine


async def test_a_sqlite_read_transaction_neither_blocks_the_writer_nor_sees_it(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    writer = make_engine(url)
    reader = make_read_engine(url)
    assert reader is not None
    try:
        async with writer.begin() as w:
            await w.execute(text("CREATE TABLE t (x INTEGER)"))
        async with reader.connect() as r:
            await r.begin()
            assert (await r.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
            async with asyncio.timeout(5):  # the writer's BEGIN IMMEDIATE does not wait for the reader
                async with writer.begin() as w:
                    await w.execute(text("INSERT INTO t VALUES (1)"))
            assert (await r.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0  # its snapshot
            await r.rollback()
            with pytest.raises(OperationalError, match="readonly"):
                await r.execute(text("INSERT INTO t VALUES (2)"))
    finally:
        await writer.dispose()
        await reader.dispose()


def test_other_databases_have_no_separate_read_engine() -> None:
    assert make_read_engine("postgresql+asyncpg://u@h/db") is None
    assert make_read_engine("sqlite+aiosqlite:///:memory:") is None
