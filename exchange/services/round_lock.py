"""One clearing round at a time across every exchange process on one database.

PostgreSQL: a session-level advisory lock on a fixed key, taken on a dedicated connection and held for
the whole round (snapshot, solve, commit); it is released when the round ends or when the connection
drops (a killed process releases it). SQLite: an exclusive `fcntl.flock` on `<database file>.round.lock`,
released by the kernel when the process dies. Inside one process an asyncio lock orders rounds first.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from identifiers.errors import ConflictError

# "hetexrnd" as a signed 64-bit integer: the one advisory-lock key clearing rounds use.
ROUND_LOCK_KEY = int.from_bytes(b"hetexrnd", "big", signed=True)
POLL_SECONDS = 0.05


class RoundBusyError(ConflictError):
    """Another clearing round held the round lock for longer than the wait allows."""

    code = "round_in_progress"


def sqlite_lock_path(database_url: str) -> Path | None:
    """`<database file>.round.lock` for a file-backed SQLite URL; None for in-memory databases."""
    database = make_url(database_url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).resolve().with_name(Path(database).name + ".round.lock")


class RoundLock:
    """Serializes clearing rounds: `async with lock.hold(timeout): ...`."""

    def __init__(self, bind: AsyncEngine | AsyncConnection, database_url: str) -> None:
        self.bind = bind
        self.database_url = database_url
        self.is_sqlite = bind.dialect.name == "sqlite"
        self._local = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def hold(self, wait_seconds: float = 60.0) -> AsyncIterator[None]:
        """Hold the round lock for the body; RoundBusyError if it is not free within `wait_seconds`."""
        deadline = time.monotonic() + wait_seconds
        try:
            await asyncio.wait_for(self._local.acquire(), timeout=max(wait_seconds, 0.001))
        except TimeoutError:
            raise RoundBusyError("another clearing round is running in this process; retry later") from None
        try:
            if self.is_sqlite:
                async with self._file_lock(deadline):
                    yield
            else:
                async with self._advisory_lock(deadline):
                    yield
        finally:
            self._local.release()

    @contextlib.asynccontextmanager
    async def _file_lock(self, deadline: float) -> AsyncIterator[None]:
        path = sqlite_lock_path(self.database_url)
        if path is None:  # in-memory database: one process only, the asyncio lock suffices
            yield
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RoundBusyError("another clearing round holds the round lock; retry later") from None
                    await asyncio.sleep(POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def _advisory_lock(self, deadline: float) -> AsyncIterator[None]:
        async with self._connection() as conn:
            while True:
                got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ROUND_LOCK_KEY})).scalar()
                if got:
                    break
                if time.monotonic() >= deadline:
                    raise RoundBusyError("another clearing round holds the round lock; retry later")
                await asyncio.sleep(POLL_SECONDS)
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ROUND_LOCK_KEY})

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection of its own (autocommit, so no transaction stays open), or the test connection."""
        if isinstance(self.bind, AsyncConnection):
            yield self.bind
            return
        async with self.bind.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn
