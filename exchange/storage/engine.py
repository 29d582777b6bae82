"""Async engine and session factory for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from exchange.settings import normalize_database_url
from exchange.storage.sqlite_inline import inline_creator


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL + foreign keys + a busy timeout; autocommit at the driver so `begin` below controls locking."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _driver_begin(connection: Any, statement: str) -> None:
    """Send BEGIN straight to the DBAPI cursor: it returns no rows, so the statement and result machinery of
    exec_driver_sql (a measurable share of a one-insert transaction) has nothing to add."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    """BEGIN IMMEDIATE: take the write lock up front so two writers never deadlock on lock upgrade."""
    _driver_begin(connection, "BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create the async engine for `url` with the per-database settings hetex relies on.

    SQLite file databases get a pool of ONE connection: every transaction starts with BEGIN IMMEDIATE
    (the database-wide write lock), so several pooled connections of one process would only wait on
    each other inside SQLite's busy handler (sleeps of up to 100 ms, unfair: multi-second p99). With
    one connection the waiters queue in the pool instead, first come first served. A session must
    therefore never open a second session while it holds the connection (the code passes `session`
    down instead); that would already deadlock on the SQLite write lock with a larger pool. Its statements
    run on the event loop thread, BEGIN on aiosqlite's thread (exchange.storage.sqlite_inline).
    """
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        if "poolclass" not in kwargs and ":memory:" not in url:
            kwargs.setdefault("pool_size", 1)
            kwargs.setdefault("max_overflow", 0)
            database = make_url(url).database
            if database and "?" not in url and not database.startswith("file:"):
                # statements on the event loop, BEGIN on aiosqlite's thread (exchange.storage.sqlite_inline)
                kwargs.setdefault("async_creator", inline_creator(database))
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    if "poolclass" not in kwargs:
        # 30 at most as before, but 20 kept open: a connection beyond pool_size is closed when returned, and
        # under bursts of signed requests that meant a new connection (several ms of CPU) every few requests
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 10)
    engine = create_async_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        event.listen(engine.sync_engine.pool, "checkin", _mark_idle)
        event.listen(engine.sync_engine.pool, "checkout", _check_on_checkout)
    return engine


#: a pooled PostgreSQL connection idle longer than this is pinged before use (a busy one is not)
PING_AFTER_IDLE_SECONDS = 10.0
_IDLE_SINCE = "hetex_idle_since"


def _mark_idle(_dbapi_connection: Any, record: Any) -> None:
    """Pool checkin: remember when the connection went idle."""
    if record is not None:
        record.info[_IDLE_SINCE] = time.monotonic()


def _check_closed(driver: Any) -> bool:
    """True when the driver connection knows its socket is closed (no round trip)."""
    return bool(driver.is_closed())


def _check_on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Pool checkout on PostgreSQL, instead of SQLAlchemy's pre-ping: a connection whose socket is known closed is
    replaced at no cost, and one idle for more than PING_AFTER_IDLE_SECONDS is pinged first (the pre-ping's
    BEGIN, `;`, ROLLBACK were three round trips on every checkout, more than a heartbeat's own statement). A
    connection that dies while in use fails that one request, as with pre-ping; DisconnectionError makes the pool
    connect afresh."""
    driver = getattr(dbapi_connection, "_connection", None)
    if driver is not None and _check_closed(driver):
        raise DisconnectionError("the pooled connection was closed")
    idle_since = record.info.get(_IDLE_SINCE)
    if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
        return  # new (just connected) or recently used
    try:
        dbapi_connection.ping()
    except Exception as exc:
        raise DisconnectionError(f"the pooled connection did not answer: {exc}") from exc


def _sqlite_read_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """A reader: WAL (set by the writer too), read-only, the same busy timeout."""
    _sqlite_on_connect(dbapi_connection, _record)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _sqlite_read_on_begin(connection: Any) -> None:
    """A deferred BEGIN: a WAL read transaction (one consistent snapshot) that never takes the write lock."""
    _driver_begin(connection, "BEGIN")


def make_read_engine(url: str) -> AsyncEngine | None:
    """For a SQLite file: a second engine of ONE read-only connection whose transactions never take the
    write lock (WAL readers do not block the writer nor wait for it), so long reads such as a clearing
    round's snapshot do not hold the one writing connection every request queues for. None for other
    databases (their pooled connections already read concurrently)."""
    url = normalize_database_url(url)
    if not url.startswith("sqlite") or ":memory:" in url:
        return None
    engine = create_async_engine(url, pool_size=1, max_overflow=0)
    event.listen(engine.sync_engine, "connect", _sqlite_read_on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_read_on_begin)
    return engine


def make_sessionmaker(bind: Any, **kwargs: Any) -> async_sessionmaker[AsyncSession]:
    """Session factory; objects stay readable after commit (handlers serialize them afterwards)."""
    kwargs.setdefault("expire_on_commit", False)
    return async_sessionmaker(bind, **kwargs)
