"""Prepared write statements run on the database driver itself, in one transaction: the signed-order hot path.

Why: through SQLAlchemy's asyncio layer one small INSERT costs an execution context, a result object and
several greenlet switches (about 0.2-0.3 ms of CPU each on the signed-order path, more than the statement and
its commit); `hetex bench api --ladder` measures what is left. So a hot path declares its statements once as
SQLAlchemy Core (`Prepared`), they are compiled once per dialect and set of columns to the driver's own SQL and
parameter order (bind processors such as JSON applied as SQLAlchemy would), and `in_transaction` runs them on the
pooled connection's driver (aiosqlite, with exchange.storage.sqlite_inline on the event loop; asyncpg with its
prepared-statement cache) between one BEGIN and one COMMIT, or ROLLBACK when the function raises.

The connection still comes from the engine's pool (SQLite's one writing connection is shared fairly with every
other transaction); on SQLite, BEGIN is `BEGIN IMMEDIATE` as everywhere else. Sessions bound to a connection
(the tests' rolled-back outer transaction) get a savepoint of that connection instead. Driver errors are raised
as SQLAlchemy's (IntegrityError for a constraint, so callers handle one exception type on both paths).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.expression import ClauseElement

T = TypeVar("T")
_Processor = Callable[[Any], Any] | None


_MISSING = object()
#: one driver parameter: its name, bind processor and, for a literal of the statement, its value
_Param = tuple[str, _Processor, Any]


@dataclass
class Prepared:
    """A Core INSERT/UPDATE/DELETE, compiled once per (dialect, parameter names) to driver SQL."""

    statement: ClauseElement
    _compiled: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[_Param, ...]]] = field(
        default_factory=dict, repr=False
    )

    def compiled(self, dialect: Dialect, names: Sequence[str]) -> tuple[str, tuple[_Param, ...]]:
        """The SQL text and, in the driver's positional order, each parameter's name, bind processor and literal
        value (literals written in the statement, such as `status == "active"`, are bound parameters too)."""
        key = (dialect.name, tuple(names))
        hit = self._compiled.get(key)
        if hit is None:
            compiled: Any = self.statement.compile(dialect=dialect, column_keys=list(names))
            params: list[_Param] = []
            defaulted = {c.key for c in [*compiled.insert_prefetch, *compiled.update_prefetch]}
            for name in compiled.positiontup or []:
                bind = compiled.binds[name]
                literal = _MISSING
                if name not in names:
                    if bind.required or bind.callable is not None or name in defaulted:
                        raise ValueError(f"parameter {name!r} is not given (columns with defaults must be passed)")
                    literal = bind.value
                params.append((name, bind.type.bind_processor(dialect), literal))
            hit = self._compiled[key] = (compiled.string, tuple(params))
        return hit


class Transaction:
    """The open transaction `in_transaction` hands to its function: execute prepared statements."""

    def __init__(self, dialect: Dialect, driver: Any) -> None:
        self.dialect = dialect
        self.driver = driver
        self.sqlite = dialect.name == "sqlite"
        self._pg: Any = None

    async def execute(self, prepared: Prepared, params: dict[str, Any]) -> int:
        """Run one prepared statement with `params`; the number of rows it changed."""
        sql, binds = prepared.compiled(self.dialect, tuple(params))
        args = []
        for name, proc, literal in binds:
            value = params[name] if literal is _MISSING else literal
            args.append(value if proc is None else proc(value))
        try:
            if self.sqlite:
                cursor = await self.driver.execute(sql, args)
                return int(cursor.rowcount)
            status: str = await self.driver.execute(sql, *args)
            return int(status.rsplit(" ", 1)[-1])
        except Exception as exc:
            raise translated_error(exc, sql, args) from exc

    async def begin(self) -> None:
        """BEGIN (SQLite: IMMEDIATE, taking the write lock up front as exchange.storage.engine does)."""
        try:
            if self.sqlite:
                await self.driver.execute("BEGIN IMMEDIATE")
            else:
                self._pg = self.driver.transaction()
                await self._pg.start()
        except Exception as exc:
            raise translated_error(exc, "BEGIN", []) from exc

    async def commit(self) -> None:
        """COMMIT."""
        try:
            await (self.driver.commit() if self.sqlite else self._pg.commit())
        except Exception as exc:
            raise translated_error(exc, "COMMIT", []) from exc

    async def rollback(self) -> None:
        """ROLLBACK."""
        await (self.driver.rollback() if self.sqlite else self._pg.rollback())


def translated_error(exc: Exception, sql: str, args: list[Any]) -> Exception:
    """A driver error as the SQLAlchemy exception its ORM path raises; any other exception unchanged."""
    kinds = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, sqlite3.IntegrityError) or "IntegrityConstraintViolationError" in kinds:
        return sa_exc.IntegrityError(sql, args, exc)
    if isinstance(exc, sqlite3.OperationalError):
        return sa_exc.OperationalError(sql, args, exc)
    if isinstance(exc, sqlite3.Error) or "PostgresError" in kinds or "InterfaceError" in kinds:
        return sa_exc.DBAPIError(sql, args, exc)
    return exc


async def execute_alone(sessions: async_sessionmaker[AsyncSession], prepared: Prepared, params: dict[str, Any]) -> int:
    """Run ONE prepared statement as its own transaction; the number of rows it changed. On PostgreSQL that is the
    statement alone in autocommit (one round trip: no BEGIN, no COMMIT); on SQLite, and inside a caller's
    transaction, it is in_transaction with that one statement (SQLite's BEGIN IMMEDIATE waits for the write lock
    off the event loop)."""
    bind = sessions.kw["bind"]
    if isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql":
        async with bind.connect() as conn:
            raw = await conn.get_raw_connection()
            return await Transaction(conn.dialect, raw.driver_connection).execute(prepared, params)

    async def one(tx: Transaction) -> int:
        return await tx.execute(prepared, params)

    return await in_transaction(sessions, one)


async def fetch_alone(
    sessions: async_sessionmaker[AsyncSession], prepared: Prepared, params: dict[str, Any]
) -> list[Any] | None:
    """The rows of ONE prepared SELECT run alone in autocommit on PostgreSQL (one round trip: no BEGIN, no ROLLBACK),
    as the driver's records (by column name); None when `sessions` is not bound to a PostgreSQL engine (the caller
    reads through a session then)."""
    bind = sessions.kw["bind"]
    if not (isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql"):
        return None
    sql, binds = prepared.compiled(bind.dialect, tuple(params))
    args = [(params[name] if literal is _MISSING else literal) for name, _proc, literal in binds]
    args = [value if proc is None else proc(value) for value, (_n, proc, _l) in zip(args, binds, strict=True)]
    async with bind.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        try:
            return list(await driver.fetch(sql, *args))
        except Exception as exc:
            raise translated_error(exc, sql, args) from exc


async def in_transaction(sessions: async_sessionmaker[AsyncSession], fn: Callable[[Transaction], Awaitable[T]]) -> T:
    """await fn(transaction) in one transaction of the database `sessions` is bound to: COMMIT, or ROLLBACK and
    re-raise when fn raises."""
    bind = sessions.kw["bind"]
    if isinstance(bind, AsyncConnection):  # inside the caller's transaction: a savepoint of it
        async with bind.begin_nested():
            raw = await bind.get_raw_connection()
            return await fn(Transaction(bind.dialect, raw.driver_connection))
    if not isinstance(bind, AsyncEngine):
        raise TypeError(f"in_transaction needs sessions bound to an engine or a connection, not {type(bind)!r}")
    async with bind.connect() as conn:
        raw = await conn.get_raw_connection()
        tx = Transaction(conn.dialect, raw.driver_connection)
        await tx.begin()
        try:
            result = await fn(tx)
        except BaseException:
            await tx.rollback()
            raise
        await tx.commit()
        return result
