"""SQLite statements and COMMIT on the event loop (exchange.storage.sqlite_inline): the automatic WAL checkpoint
is off on that connection, and its own periodic checkpoint keeps the WAL from growing without bound."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy import text

from exchange.storage import sqlite_inline
from exchange.storage.engine import make_engine


async def test_commits_run_inline_and_the_periodic_checkpoint_bounds_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    wal = f"{path}-wal"
    rows = 5 * sqlite_inline.CHECKPOINT_EVERY
    sizes: list[int] = []
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER, pad TEXT)"))
            assert (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one() == 0
        for i in range(rows):
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (:x, :pad)"), {"x": i, "pad": "p" * 2000})
            if i % sqlite_inline.CHECKPOINT_EVERY == sqlite_inline.CHECKPOINT_EVERY - 2:
                sizes.append(os.stat(wal).st_size)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == rows
    finally:
        await engine.dispose()
    # without a checkpoint every commit appends to the WAL (5 x 200 commits of 2 kB pages: > 8 MB); with one, the
    # WAL restarts from its beginning, so it stays the size of one period of commits
    assert max(sizes) == sizes[0], sizes
    with sqlite3.connect(path) as check:  # every row reached the database file or the WAL: nothing lost
        assert check.execute("SELECT count(*), sum(x) FROM t").fetchone() == (rows, sum(range(rows)))
