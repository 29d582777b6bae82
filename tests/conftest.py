"""Fixtures: the same tests on SQLite and PostgreSQL, each test inside a rolled-back transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from exchange.storage.engine import make_engine, make_sessionmaker
from tests import dbs

BACKENDS = ["sqlite", "pg"]


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str | None]:
    """Admin URL of the test PostgreSQL server (None when there is none)."""
    with dbs.pg_server() as url:
        yield url


@pytest.fixture(scope="session")
def pg_session_db(pg_server_url: str | None) -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head."""
    server = dbs.require_pg(pg_server_url)
    url = dbs.create_pg_database(server)
    dbs.migrate(url)
    yield url
    dbs.drop_pg_database(server, url)


@pytest.fixture(scope="session")
def sqlite_session_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file for this test session, migrated to head."""
    path = tmp_path_factory.mktemp("sqlite") / "hetex.db"
    url = f"sqlite+aiosqlite:///{path}"
    dbs.migrate(url)
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which database a test runs on."""
    if request.param == "pg":
        request.applymarker(pytest.mark.pg)
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """URL of the session database for `backend`."""
    return str(request.getfixturevalue("pg_session_db" if backend == "pg" else "sqlite_session_db"))


@dataclass
class TestDb:
    """A database handle for one test: its URL and a session factory inside a rolled-back transaction."""

    backend: str
    url: str
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture
async def db(backend: str, db_url: str) -> AsyncIterator[TestDb]:
    """Each test runs inside one outer transaction that is rolled back afterwards."""
    engine = make_engine(db_url, poolclass=NullPool) if backend == "pg" else make_engine(db_url)
    conn = await engine.connect()
    trans = await conn.begin()
    sessions = make_sessionmaker(conn, join_transaction_mode="create_savepoint")
    try:
        yield TestDb(backend, db_url, sessions)
    finally:
        await trans.rollback()
        await conn.close()
        await engine.dispose()


@pytest.fixture
def fresh_db_factory(backend: str, pg_server_url: str | None, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Creates new, migrated databases for tests that need real concurrency or several processes."""
    created: list[str] = []
    server = dbs.require_pg(pg_server_url) if backend == "pg" else None

    def make() -> str:
        if server is not None:
            url = dbs.create_pg_database(server)
        else:
            url = f"sqlite+aiosqlite:///{tmp_path / f'fresh{len(created)}.db'}"
        dbs.migrate(url)
        created.append(url)
        return url

    yield make
    if server is not None:
        for url in created:
            dbs.drop_pg_database(server, url)


def pytest_addoption(parser: Any) -> None:
    """--soak: also run the long soak tests (marker `soak`), left out of the default run to keep it short."""
    parser.addoption("--soak", action="store_true", help="run the soak tests (marker soak) too")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Deselect soak tests unless --soak was given (whatever -m says, so `-m "not slow"` stays short too)."""
    if config.getoption("--soak"):
        return
    soak = [item for item in items if item.get_closest_marker("soak") is not None]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if item.get_closest_marker("soak") is None]


def pytest_report_header(config: Any) -> str:
    """Say up front which PostgreSQL the run will use."""
    return "hetex: PostgreSQL tests use testcontainers, $HETEX_TEST_PG_URL or 127.0.0.1:5432 (CI=true: required)"
