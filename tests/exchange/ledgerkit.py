"""Helpers for ledger tests: build the identity and ledger services on a test database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.services.identity import IdentityService
from exchange.services.ledger import LedgerService

ORIGIN = "hetex.test/log"


async def make_ledger(sessions: async_sessionmaker[AsyncSession], key_dir: Path, origin: str = ORIGIN) -> LedgerService:
    """A LedgerService whose exchange key is in `key_dir` (created, as `hetex admin init` does, on a keyless DB)."""
    identity = IdentityService(sessions, key_dir, origin)
    await identity.init(exist_ok=True)
    return LedgerService(sessions, identity, origin)


def record(i: int) -> dict[str, Any]:
    """A small contract-like record body."""
    return {"id": f"rec-{i:05d}", "devices": i % 7 + 1, "price_fen": 1000 + i, "note": "é" * (i % 3)}


async def append_n(ledger: LedgerService, n: int, start: int = 0, *, batch: bool = False) -> list[Any]:
    """Append n records, each in its own transaction (or all in one when batch)."""
    out: list[Any] = []
    if batch:
        async with ledger.sessions.begin() as session:
            out = await ledger.append_many(
                session, [("contract", f"rec-{i:05d}", record(i)) for i in range(start, start + n)]
            )
        return out
    for i in range(start, start + n):
        async with ledger.sessions.begin() as session:
            out.append(await ledger.append(session, "contract", f"rec-{i:05d}", record(i)))
    return out
