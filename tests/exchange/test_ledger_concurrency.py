"""Concurrent appends from several connections: no gaps, no duplicate indices, the tree verifies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.pool import NullPool

from exchange.services.ledger import AppendedRecord
from exchange.storage.engine import make_engine, make_sessionmaker
from tests.exchange.ledgerkit import make_ledger, record

WRITERS = 4
PER_WRITER = 12


async def test_concurrent_appends_have_no_gaps_or_duplicates(
    backend: str, fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = fresh_db_factory()
    engines = [make_engine(url, poolclass=NullPool) for _ in range(WRITERS)]
    key_dir = tmp_path / "keys"
    ledgers = [await make_ledger(make_sessionmaker(e), key_dir) for e in engines]
    try:

        async def writer(w: int) -> list[AppendedRecord]:
            ledger = ledgers[w]
            out: list[AppendedRecord] = []
            for i in range(PER_WRITER):
                n = w * PER_WRITER + i
                async with ledger.sessions.begin() as session:
                    if i % 4 == 3:  # some batches of two
                        pair = await ledger.append_many(
                            session, [("usage", f"w{w}-{i}a", record(n)), ("usage", f"w{w}-{i}b", record(n + 1000))]
                        )
                        assert pair[1].index == pair[0].index + 1  # a batch is contiguous
                        out += pair
                    else:
                        out.append(await ledger.append(session, "usage", f"w{w}-{i}", record(n)))
                    await asyncio.sleep(0)  # let the other writers interleave inside transactions
            return out

        results = await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        indices = sorted(r.index for rs in results for r in rs)
        total = WRITERS * (PER_WRITER + PER_WRITER // 4)
        assert indices == list(range(total))
        ledger = ledgers[0]
        cp = await ledger.checkpoint()
        assert cp.size == total
        report = await ledger.verify_log()
        assert report.ok, [p.describe() for p in report.problems]
    finally:
        for e in engines:
            await e.dispose()
