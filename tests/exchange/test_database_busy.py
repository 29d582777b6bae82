"""A request that waited out the database (pool checkout timeout, SQLite's write lock) is a 503 with Retry-After,
not a 500 (exchange.api.problems)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from exchange.api.problems import database_busy, problem_middleware
from exchange.storage.engine import make_engine


async def test_a_pool_wait_past_its_timeout_answers_503_with_retry_after(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", pool_timeout=0.2)

    async def handler(_request: web.Request) -> web.Response:
        async with engine.connect() as conn:  # the pool's one connection is held below: waits, then times out
            await conn.execute(text("SELECT 1"))
        return web.json_response({})

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/x", handler)
    try:
        async with engine.connect() as held, TestClient(TestServer(app)) as client:
            await held.execute(text("SELECT 1"))
            response = await client.get("/x")
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert (await response.json())["code"] == "database_busy"
    finally:
        await engine.dispose()


def test_sqlite_database_is_locked_is_busy_and_other_errors_are_not(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    holder, other = sqlite3.connect(path, isolation_level=None), sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        locked = exc
    holder.execute("ROLLBACK")
    busy = database_busy(sa_exc.OperationalError("BEGIN", [], locked))
    assert busy is not None and busy.code == "database_busy"
    assert database_busy(sa_exc.OperationalError("SELECT", [], sqlite3.OperationalError("no such table: t"))) is None
    assert database_busy(sa_exc.IntegrityError("INSERT", [], sqlite3.IntegrityError("UNIQUE"))) is None
