"""Test databases: a real PostgreSQL (testcontainers, HETEX_TEST_PG_URL, or 127.0.0.1:5432) and SQLite."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from exchange.storage.engine import make_engine
from exchange.storage.migrate import upgrade_engine

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/test"


def run_async(coro: Any) -> Any:
    """Run `coro` to completion in a private loop (in a worker thread when a loop is already running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def in_ci() -> bool:
    """CI sets CI=true: there a missing PostgreSQL is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


async def _pg_answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


@contextlib.contextmanager
def pg_server() -> Iterator[str | None]:
    """Yield an admin URL of a reachable PostgreSQL server, or None."""
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    url = os.environ.get("HETEX_TEST_PG_URL") or LOCAL_PG
    url = url.replace("postgresql+asyncpg://", "postgresql://")
    yield url if run_async(_pg_answers(url)) else None


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead."""
    base, _, _db = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_database(server_url: str) -> str:
    """Create a fresh, uniquely named database and return its asyncpg URL."""
    name = f"hetex_test_{os.getpid()}_{secrets.token_hex(4)}"
    run_async(_admin(server_url, f'CREATE DATABASE "{name}"'))
    return with_database(server_url, name).replace("postgresql://", "postgresql+asyncpg://")


def drop_pg_database(server_url: str, db_url: str) -> None:
    """Drop a database created by create_pg_database."""
    name = db_url.rpartition("/")[2]
    run_async(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(url: str) -> None:
    """Upgrade `url` to head in a private event loop."""

    async def go() -> None:
        engine = make_engine(url)
        try:
            await upgrade_engine(engine)
        finally:
            await engine.dispose()

    run_async(go())


def require_pg(server_url: str | None) -> str:
    """The server URL, or fail (CI) / skip loudly (elsewhere) when no PostgreSQL answers."""
    if server_url is None:
        reason = (
            "PostgreSQL not reachable (no Docker engine, HETEX_TEST_PG_URL unset, nothing on "
            "127.0.0.1:5432): PostgreSQL tests NOT run"
        )
        if in_ci():
            pytest.fail(reason + " -- and CI=true requires them")
        pytest.skip(reason)
    return server_url
