"""Replay memory for signed requests: (key id, nonce) rows of `seen_nonces`, written inside the caller's
transaction, so that a request's nonce and its effects commit together or not at all.

One statement per request: an upsert that inserts the nonce, or revives a remembered nonce whose window
has passed (its old signature can no longer be accepted), and changes nothing when the nonce is still
remembered, which is a replay. On PostgreSQL a concurrent transaction holding the same nonce makes the
upsert wait for it: the second one is refused if the first commits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.storage.participants import SeenNonce
from exchange.storage.transactions import Prepared, Transaction
from federation.errors import SignatureError

NONCE_MAX_LENGTH = 128
PURGE_EVERY_SECONDS = 30

_TABLE: Table = SeenNonce.__table__  # type: ignore[assignment]


@dataclass(slots=True)
class NonceClaim:
    """A verified request's nonce, still to be remembered (by the handler's service in its own
    transaction, or else by the authentication layer); `remembered` is set once that has committed."""

    key_id: str
    nonce: str
    created: int
    remembered: bool = False


def _upsert(dialect: str) -> Any:
    insert_fn = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert_fn(_TABLE)
    return stmt.on_conflict_do_update(
        index_elements=[_TABLE.c.key_id, _TABLE.c.nonce],
        set_={"expires_at": stmt.excluded.expires_at},
        where=_TABLE.c.expires_at < bindparam("now"),
    )


# Built once per dialect: a reused statement object keeps SQLAlchemy's compiled-statement cache warm.
_UPSERTS = {name: _upsert(name) for name in ("postgresql", "sqlite")}
_PREPARED_UPSERTS = {name: Prepared(stmt) for name, stmt in _UPSERTS.items()}
_PURGE = Prepared(delete(_TABLE).where(_TABLE.c.expires_at < bindparam("now")))


@dataclass
class NonceStore:
    """Remembers nonces for the signature window and refuses a second use (SignatureError 'nonce_replayed')."""

    window_seconds: int = 300
    _last_purge: float = field(default=0.0, repr=False)

    async def remember(self, session: AsyncSession, claim: NonceClaim, now: int | None = None) -> None:
        """Remember `claim` in `session`'s transaction, or raise SignatureError('nonce_replayed') when the
        nonce is still remembered. The caller commits; a rollback forgets the nonce again."""
        now = self._now(claim, now)
        if self._purge_due():
            await session.execute(delete(SeenNonce).where(SeenNonce.expires_at < now))
        dialect = session.get_bind().dialect.name
        result: Any = await session.execute(_UPSERTS[dialect], self._params(claim, now))
        self._check(result.rowcount, claim)

    async def remember_in(self, tx: Transaction, claim: NonceClaim, now: int | None = None) -> None:
        """remember() in a prepared-statement transaction (exchange.storage.transactions.in_transaction)."""
        now = self._now(claim, now)
        if self._purge_due():
            await tx.execute(_PURGE, {"now": now})
        self._check(await tx.execute(_PREPARED_UPSERTS[tx.dialect.name], self._params(claim, now)), claim)

    @staticmethod
    def _now(claim: NonceClaim, now: int | None) -> int:
        if len(claim.nonce) > NONCE_MAX_LENGTH:
            raise SignatureError("signature_malformed", f"nonce longer than {NONCE_MAX_LENGTH} characters")
        return int(time.time()) if now is None else now

    def _purge_due(self) -> bool:
        """True once every PURGE_EVERY_SECONDS: this transaction also deletes the expired nonces."""
        if time.monotonic() - self._last_purge <= PURGE_EVERY_SECONDS:
            return False
        self._last_purge = time.monotonic()
        return True

    def _params(self, claim: NonceClaim, now: int) -> dict[str, Any]:
        return {
            "key_id": claim.key_id,
            "nonce": claim.nonce,
            "expires_at": max(claim.created, now) + self.window_seconds,
            "now": now,
        }

    @staticmethod
    def _check(rowcount: int, claim: NonceClaim) -> None:
        if rowcount != 1:
            raise SignatureError("nonce_replayed", "nonce was already used", keyid=claim.key_id)

    async def remember_now(
        self, sessions: async_sessionmaker[AsyncSession], claim: NonceClaim, now: int | None = None
    ) -> None:
        """remember() in a transaction of its own (requests whose handler stores nothing else)."""
        async with sessions.begin() as session:
            await self.remember(session, claim, now)
        claim.remembered = True
