"""Prepared statements on the driver in one transaction (exchange.storage.transactions), SQLite and PostgreSQL,
on an engine's pool and inside a caller's transaction (a savepoint)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from exchange.services.nonces import NonceClaim, NonceStore
from exchange.storage.engine import make_engine, make_sessionmaker
from exchange.storage.participants import Participant, SeenNonce
from exchange.storage.transactions import Prepared, Transaction, execute_alone, in_transaction
from federation.errors import SignatureError

NOW = 1_700_000_000
_INSERT_NONCE = Prepared(insert(SeenNonce.__table__))  # type: ignore[arg-type]
_INSERT_PARTICIPANT = Prepared(insert(Participant.__table__))  # type: ignore[arg-type]


@pytest.fixture(params=["engine", "connection"])
async def sessions(request: pytest.FixtureRequest, backend: str, db_url: str) -> AsyncIterator[Any]:
    """Sessions bound to an engine on the session database (its writes are deleted after), or to one connection
    inside a transaction rolled back after the test, as the `db` fixture's."""
    engine = make_engine(db_url, poolclass=NullPool) if backend == "pg" else make_engine(db_url)
    try:
        if request.param == "connection":
            conn = await engine.connect()
            trans = await conn.begin()
            try:
                yield make_sessionmaker(conn, join_transaction_mode="create_savepoint")
            finally:
                await trans.rollback()
                await conn.close()
            return
        try:
            yield make_sessionmaker(engine)
        finally:
            async with engine.begin() as conn:
                await conn.execute(SeenNonce.__table__.delete().where(SeenNonce.key_id.like("tx-%")))
                await conn.execute(Participant.__table__.delete().where(Participant.id.like("tx-%")))
    finally:
        await engine.dispose()


async def _nonces(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, int]]:
    async with sessions() as session:
        rows = await session.execute(
            select(SeenNonce.nonce, SeenNonce.expires_at).where(SeenNonce.key_id.like("tx-%")).order_by(SeenNonce.nonce)
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def test_statements_commit_together_and_count_their_rows(sessions: Any) -> None:
    async def two(tx: Transaction) -> int:
        first = await tx.execute(_INSERT_NONCE, {"key_id": "tx-k", "nonce": "a", "expires_at": NOW})
        return first + await tx.execute(_INSERT_NONCE, {"key_id": "tx-k", "nonce": "b", "expires_at": NOW + 1})

    assert await in_transaction(sessions, two) == 2
    assert await _nonces(sessions) == [("a", NOW), ("b", NOW + 1)]


async def test_a_raising_function_rolls_everything_back(sessions: Any) -> None:
    async def fails(tx: Transaction) -> None:
        await tx.execute(_INSERT_NONCE, {"key_id": "tx-k", "nonce": "a", "expires_at": NOW})
        raise RuntimeError("the request's other work failed")

    with pytest.raises(RuntimeError):
        await in_transaction(sessions, fails)
    assert await _nonces(sessions) == []


async def test_a_constraint_is_sqlalchemys_integrity_error_and_rolls_back(sessions: Any) -> None:
    async def duplicate(tx: Transaction) -> None:
        await tx.execute(_INSERT_NONCE, {"key_id": "tx-k", "nonce": "a", "expires_at": NOW})
        await tx.execute(_INSERT_NONCE, {"key_id": "tx-k", "nonce": "a", "expires_at": NOW})

    with pytest.raises(IntegrityError):
        await in_transaction(sessions, duplicate)
    assert await _nonces(sessions) == []
    # the connection is usable again afterwards
    await in_transaction(
        sessions, lambda tx: tx.execute(_INSERT_NONCE, {"key_id": "tx-k", "nonce": "c", "expires_at": 1})
    )
    assert await _nonces(sessions) == [("c", 1)]


async def test_missing_columns_are_refused_not_defaulted_silently(sessions: Any) -> None:
    row = {"id": "tx-p", "role": "buyer", "name": "b", "public_key": "tx-pk", "key_id": "tx-kid", "status": "active"}
    with pytest.raises(ValueError, match="created_at"):  # a Python-side default SQLAlchemy would have filled
        await in_transaction(sessions, lambda tx: tx.execute(_INSERT_PARTICIPANT, row))
    await in_transaction(sessions, lambda tx: tx.execute(_INSERT_PARTICIPANT, {**row, "created_at": NOW}))
    async with sessions() as session:
        assert (await session.get(Participant, "tx-p")) is not None


async def test_nonce_store_on_a_prepared_transaction_refuses_a_replay(sessions: Any) -> None:
    store = NonceStore(window_seconds=300)
    remember: Callable[[str, int], Any] = lambda nonce, now: in_transaction(  # noqa: E731
        sessions, lambda tx: store.remember_in(tx, NonceClaim("tx-k", nonce, now), now=now)
    )
    await remember("n1", NOW)
    with pytest.raises(SignatureError) as info:
        await remember("n1", NOW + 10)
    assert info.value.reason == "nonce_replayed"
    await remember("n1", NOW + 301)  # its old signature expired: revived for the new window
    store._last_purge = 0.0  # the purge is due: expired rows go in the same transaction
    await remember("n2", NOW + 10_000)
    assert await _nonces(sessions) == [("n2", NOW + 10_300)]


async def test_one_statement_alone_commits_and_counts_and_raises_integrity_error(sessions: Any) -> None:
    """execute_alone: one statement as its own transaction (PostgreSQL autocommit on an engine)."""
    assert await execute_alone(sessions, _INSERT_NONCE, {"key_id": "tx-k", "nonce": "a", "expires_at": NOW}) == 1
    assert await _nonces(sessions) == [("a", NOW)]
    with pytest.raises(IntegrityError):
        await execute_alone(sessions, _INSERT_NONCE, {"key_id": "tx-k", "nonce": "a", "expires_at": NOW})
    # the connection is usable again afterwards, and the failed statement left nothing
    assert await execute_alone(sessions, _INSERT_NONCE, {"key_id": "tx-k", "nonce": "b", "expires_at": 1}) == 1
    assert await _nonces(sessions) == [("a", NOW), ("b", 1)]
