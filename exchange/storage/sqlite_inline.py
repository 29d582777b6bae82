"""SQLite without a thread hop per statement: an aiosqlite connection that runs statements on the event loop.

Why: aiosqlite hands every call (cursor, execute, fetch, commit) to its worker thread and back, and each hand-off
costs a GIL switch (up to the 5 ms switch interval under load): on the signed-order path these hops cost more
than the statements themselves (issue 14, `hetex bench api --ladder`). SQLite statements on a local file take
microseconds, so running them inline is cheaper, with one exception: `BEGIN IMMEDIATE` may wait for another
process's write lock (up to the busy timeout). So BEGIN is first tried inline with a zero busy timeout, and only
when the lock is taken does it go to the worker thread to wait there, while the event loop keeps serving. Once
BEGIN IMMEDIATE holds the write lock, no later statement of the transaction waits on a lock (WAL: readers never
block the writer).

COMMIT runs inline too: in WAL mode with synchronous=NORMAL it appends the transaction's pages to the WAL (writes
to the page cache, no fsync) and takes no further lock. What may be slow is a WAL checkpoint (it copies pages
into the database file and fsyncs it), which SQLite would run inside the COMMIT that crosses
`wal_autocheckpoint` pages. So this connection turns the automatic checkpoint off and runs a PASSIVE checkpoint
itself on the worker thread every CHECKPOINT_EVERY commits (a few hundred pages at hetex's transaction sizes, the
order of SQLite's default of 1000), while the event loop keeps serving. The one connection (see
exchange.storage.engine) is used by one coroutine at a time, so the sqlite3 connection is never used by two
threads at once (check_same_thread=False only lifts the ownership check).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite

#: commits between two PASSIVE checkpoints run on the worker thread (SQLite's automatic one is off)
CHECKPOINT_EVERY = 200


def _waits_for_lock(args: tuple[Any, ...]) -> bool:
    """True for a statement that may wait on another connection's lock (BEGIN)."""
    return bool(args) and isinstance(args[0], str) and args[0].lstrip()[:5].upper() == "BEGIN"


def _commit_and_checkpoint(conn: sqlite3.Connection) -> None:
    """COMMIT then a PASSIVE checkpoint (it waits for no reader or writer): run on the worker thread."""
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class InlineConnection(aiosqlite.Connection):
    """aiosqlite.Connection whose calls run on the calling (event loop) thread, except BEGIN when another
    connection holds the write lock, and the periodic checkpoint (see module)."""

    commits_since_checkpoint = 0
    busy_timeout_ms: int | None = None

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        conn = self._connection
        if not self._running or conn is None:
            return await super()._execute(fn, *args, **kwargs)
        if getattr(fn, "__name__", "") == "commit":
            self.commits_since_checkpoint += 1
            if self.commits_since_checkpoint >= CHECKPOINT_EVERY:
                self.commits_since_checkpoint = 0
                return await super()._execute(_commit_and_checkpoint, conn)  # fsync: off the event loop
            return fn(*args, **kwargs)
        if not _waits_for_lock(args):
            return fn(*args, **kwargs)
        if self.busy_timeout_ms is None:
            (self.busy_timeout_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
        conn.execute("PRAGMA busy_timeout=0")
        try:
            return fn(*args, **kwargs)  # the write lock is free: taken without waiting
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        return await super()._execute(fn, *args, **kwargs)  # wait for it on the worker thread


def inline_creator(path: str) -> Callable[[], Awaitable[aiosqlite.Connection]]:
    """An `async_creator` for create_async_engine: InlineConnection to the SQLite file at `path`, its
    automatic checkpoint off (InlineConnection checkpoints on its worker thread)."""

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, check_same_thread=False)
        connection.execute("PRAGMA wal_autocheckpoint=0")
        return connection

    async def create() -> aiosqlite.Connection:
        connection = InlineConnection(connect, 64)
        return await connection

    return create
