"""PostgreSQL pool checkout (exchange.storage.engine): a busy connection is used without a ping, a connection
whose server process was killed is replaced on its next checkout, and an idle one is pinged first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.storage import engine as engine_module
from exchange.storage.engine import make_engine

pytestmark = pytest.mark.pg


@pytest.fixture
async def engine(pg_session_db: str) -> AsyncIterator[AsyncEngine]:
    """A pooled engine (one connection, so every checkout gets the same one back)."""
    eng = make_engine(pg_session_db, pool_size=1, max_overflow=0)
    try:
        yield eng
    finally:
        await eng.dispose()


async def _backend_pid(eng: AsyncEngine) -> int:
    async with eng.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(pg_session_db: str, pid: int) -> None:
    admin = await asyncpg.connect(pg_session_db.replace("+asyncpg", ""))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


def _count_pings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the pings the checkout handler sends (through the driver adapter's ping)."""
    pings: list[int] = []
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

    original = AsyncAdapt_asyncpg_connection.ping

    def counted(self: Any) -> None:
        pings.append(1)
        original(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", counted)
    return pings


async def test_a_recently_used_connection_is_not_pinged(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    pings = _count_pings(monkeypatch)
    first = await _backend_pid(engine)
    for _ in range(5):
        assert await _backend_pid(engine) == first
    assert pings == []


async def test_a_killed_connection_is_replaced_on_checkout(engine: AsyncEngine, pg_session_db: str) -> None:
    first = await _backend_pid(engine)
    await _terminate(pg_session_db, first)
    for _ in range(50):  # let the event loop see the closed socket (connection_lost)
        await asyncio.sleep(0.01)
    second = await _backend_pid(engine)  # no error: the closed connection was not handed out
    assert second != first


async def test_an_idle_connection_is_pinged_and_replaced_when_dead(
    engine: AsyncEngine, pg_session_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(monkeypatch)
    first = await _backend_pid(engine)
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", -1.0)  # everything counts as idle
    assert await _backend_pid(engine) == first and len(pings) == 1
    # the socket still looks open (no event loop turn since the kill), so only the ping finds it dead
    monkeypatch.setattr(engine_module, "_check_closed", lambda _driver: False)
    await _terminate(pg_session_db, first)
    second = await _backend_pid(engine)
    assert second != first and len(pings) >= 2
