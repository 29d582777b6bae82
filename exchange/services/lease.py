"""The singleton lease: exactly one `hetex serve` process on a database runs the timed duties (periodic
rounds, checkpoint publication, federation loops, hold expiry, export and round recovery).

PostgreSQL: a session-level advisory lock on a fixed key, held on a dedicated connection for as long as the
process holds the lease. The server releases it when that connection drops (a killed process: at once), and
a waiting process takes it on its next poll. Each takeover increments `leases.epoch` (the fencing token); a
singleton write runs `Fence.check` inside its own transaction, which share-locks the lease row and refuses
if the epoch moved on: a holder that was paused while its connection was lost cannot write afterwards, and
a takeover waits for a fenced write in flight to commit. SQLite: an exclusive `fcntl.flock` on
`<database file>.lease.lock` (released by the kernel when the process dies), with the same epoch row.
In-memory SQLite and test connections: the lease is local and always held, without fencing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from exchange.storage.base import now_s
from exchange.storage.leases import Lease
from identifiers.errors import ConflictError

log = logging.getLogger("hetex.lease")

# "hetexlse" as a signed 64-bit integer: the advisory-lock key of the duties lease (rounds use "hetexrnd").
LEASE_LOCK_KEY = int.from_bytes(b"hetexlse", "big", signed=True)
LEASE_NAME = "duties"

#: A duty: given the fence of this tenure and an event set when it should stop, a coroutine to run.
DutyFactory = Callable[["Fence | None", asyncio.Event], Coroutine[Any, Any, None]]


class LeaseLostError(ConflictError):
    """A singleton write was refused: another process took the lease over (its epoch is newer)."""

    code = "lease_lost"


@dataclass(frozen=True)
class Fence:
    """The fencing token of one tenure of a lease: writes made under it check the epoch is still current."""

    name: str
    epoch: int

    async def check(self, session: AsyncSession) -> None:
        """In the caller's transaction: share-lock the lease row; LeaseLostError if the epoch moved on."""
        stmt = select(Lease.epoch).where(Lease.name == self.name)
        bind = session.get_bind()
        if bind.dialect.name == "postgresql":
            stmt = stmt.with_for_update(read=True)
        current = await session.scalar(stmt)
        if current != self.epoch:
            raise LeaseLostError(
                f"lease {self.name!r} moved to epoch {current} (this process held epoch {self.epoch}): write refused"
            )


def sqlite_lease_path(database_url: str) -> Path | None:
    """`<database file>.lease.lock` for a file-backed SQLite URL; None for in-memory databases."""
    database = make_url(database_url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).resolve().with_name(Path(database).name + ".lease.lock")


@dataclass
class _Duty:
    name: str
    factory: DutyFactory


@dataclass
class SingletonLease:
    """Acquires the lease (polling), runs the registered duties while it holds it, stops them when it loses it."""

    bind: AsyncEngine | AsyncConnection
    sessions: async_sessionmaker[AsyncSession]
    database_url: str
    poll_seconds: float = 1.0
    stop_grace_seconds: float = 10.0
    name: str = LEASE_NAME
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    fence: Fence | None = None
    held: bool = False
    takeovers: int = 0
    task: asyncio.Task[None] | None = None
    _duties: list[_Duty] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def add_duty(self, name: str, factory: DutyFactory) -> None:
        """Register a duty (before `run`)."""
        self._duties.append(_Duty(name, factory))

    @property
    def is_local(self) -> bool:
        """True when the lease cannot be contended (in-memory SQLite or a test connection)."""
        if isinstance(self.bind, AsyncConnection):
            return True
        return self.bind.dialect.name == "sqlite" and sqlite_lease_path(self.database_url) is None

    async def run(self) -> None:
        """Until `stop`: acquire the lease, run the duties while it is held; after losing it, try again."""
        while not self._stop.is_set():
            try:
                if self.is_local:
                    await self._tenure(None, self._stop.wait())
                elif self.bind.dialect.name == "sqlite":
                    await self._run_file_lock()
                else:
                    await self._run_advisory()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease %r: lost or not acquired; retrying in %s s", self.name, self.poll_seconds)
                await self._sleep(self.poll_seconds)

    async def shutdown(self) -> None:
        """Stop the duties (each gets `stop_grace_seconds`), release the lease and wait for `run` (`task`)."""
        self._stop.set()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _run_advisory(self) -> None:
        assert isinstance(self.bind, AsyncEngine)
        async with self.bind.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            while not self._stop.is_set():
                got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEASE_LOCK_KEY})).scalar()
                if got:
                    break
                await self._sleep(self.poll_seconds)
            else:
                return
            try:
                fence = await self._take()
                await self._tenure(fence, self._watch_connection(conn))
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LEASE_LOCK_KEY}))

    async def _watch_connection(self, conn: AsyncConnection) -> None:
        """Returns when `stop` is set; raises when the lease connection fails (the lock is gone with it)."""
        while not self._stop.is_set():
            await self._sleep(self.poll_seconds)
            await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=max(self.poll_seconds * 5, 5))

    async def _run_file_lock(self) -> None:
        path = sqlite_lease_path(self.database_url)
        assert path is not None
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while not self._stop.is_set():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await self._sleep(self.poll_seconds)
            else:
                return
            try:
                await self._tenure(await self._take(), self._stop.wait())
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def _take(self) -> Fence:
        """Increment the epoch (creating the row at epoch 1): the fencing token of this tenure."""
        async with self.sessions.begin() as session:
            row = await session.get(Lease, self.name, with_for_update=True)
            if row is None:
                session.add(Lease(name=self.name, epoch=1, holder=self.holder, acquired_at=now_s()))
                epoch = 1
            else:
                epoch = int(row.epoch) + 1
                await session.execute(
                    update(Lease)
                    .where(Lease.name == self.name)
                    .values(epoch=epoch, holder=self.holder, acquired_at=now_s())
                )
        return Fence(self.name, epoch)

    async def _tenure(self, fence: Fence | None, until: Awaitable[object]) -> None:
        """Hold: run every duty until `until` returns (stop) or raises (lost); then stop the duties."""
        self.fence, self.held = fence, True
        self.takeovers += 1
        log.info(
            "lease %r acquired by %s (epoch %s): running %s",
            self.name,
            self.holder,
            fence.epoch if fence else "local",
            ", ".join(d.name for d in self._duties) or "no duties",
        )
        stop = asyncio.Event()
        tasks = [asyncio.create_task(d.factory(fence, stop), name=f"hetex-duty-{d.name}") for d in self._duties]
        watcher = asyncio.ensure_future(until)
        try:
            await asyncio.wait([watcher])  # duties that end early (interval 0) do not end the tenure
            if watcher.exception() is not None:
                log.warning("lease %r lost by %s: %r", self.name, self.holder, watcher.exception())
        finally:
            self.held = False
            stop.set()
            watcher.cancel()
            pending = [t for t in tasks if not t.done()]
            if pending:
                _done, late = await asyncio.wait(pending, timeout=self.stop_grace_seconds)
                for t in late:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for t in tasks:
                if not t.cancelled() and t.exception() is not None:
                    log.error("duty %s ended with %r", t.get_name(), t.exception())
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
            self.fence = None
            log.info("lease %r released by %s", self.name, self.holder)
