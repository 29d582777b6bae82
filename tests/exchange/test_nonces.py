"""The nonce store: one upsert per request inside the caller's transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from exchange.services.nonces import NonceClaim, NonceStore
from exchange.storage.participants import SeenNonce
from federation.errors import SignatureError

NOW = 1_700_000_000


async def _rows(db: Any) -> list[tuple[str, str, int]]:
    async with db.sessions() as session:
        result = await session.execute(select(SeenNonce.key_id, SeenNonce.nonce, SeenNonce.expires_at))
        return sorted(tuple(r) for r in result.all())


async def test_second_use_is_refused_until_the_window_has_passed(db: Any) -> None:
    store = NonceStore(window_seconds=300)
    claim = NonceClaim("k1", "n1", NOW)
    await store.remember_now(db.sessions, claim, now=NOW)
    assert claim.remembered and await _rows(db) == [("k1", "n1", NOW + 300)]
    for now in (NOW + 1, NOW + 300):
        with pytest.raises(SignatureError) as info:
            await store.remember_now(db.sessions, NonceClaim("k1", "n1", now), now=now)
        assert info.value.reason == "nonce_replayed"
    # the same nonce under another key is another request
    await store.remember_now(db.sessions, NonceClaim("k2", "n1", NOW), now=NOW)
    # once its old signature has expired, a remembered nonce may be used again (the row is revived)
    await store.remember_now(db.sessions, NonceClaim("k1", "n1", NOW + 301), now=NOW + 301)
    assert await _rows(db) == [("k1", "n1", NOW + 601), ("k2", "n1", NOW + 300)]


async def test_a_rolled_back_transaction_forgets_the_nonce(db: Any) -> None:
    store = NonceStore()
    claim = NonceClaim("k1", "n1", NOW)
    with pytest.raises(RuntimeError):
        async with db.sessions.begin() as session:
            await store.remember(session, claim, now=NOW)
            raise RuntimeError("the request's other work failed")
    assert not claim.remembered and await _rows(db) == []
    await store.remember_now(db.sessions, claim, now=NOW)
    assert claim.remembered


async def test_long_nonce_is_malformed_and_expired_rows_are_purged(db: Any) -> None:
    store = NonceStore(window_seconds=10)
    with pytest.raises(SignatureError) as info:
        await store.remember_now(db.sessions, NonceClaim("k1", "x" * 129, NOW), now=NOW)
    assert info.value.reason == "signature_malformed"
    await store.remember_now(db.sessions, NonceClaim("k1", "old", NOW), now=NOW)
    store._last_purge = 0.0  # due again
    await store.remember_now(db.sessions, NonceClaim("k1", "new", NOW + 60), now=NOW + 60)
    async with db.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(SeenNonce))).scalar_one() == 1
