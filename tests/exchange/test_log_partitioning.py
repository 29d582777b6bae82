"""The transparency log on a table range-partitioned by leaf index (PostgreSQL): appends land in the
partitions, proofs verify, the append-only triggers still refuse changes (specs/capacity.md 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from exchange.storage.engine import make_engine, make_sessionmaker
from exchange.storage.partitioning import add_partitions, partition_log
from federation.merkle import verify_inclusion
from tests import dbs
from tests.exchange.ledgerkit import append_n, make_ledger

pytestmark = pytest.mark.pg


async def test_log_on_partitioned_table(pg_server_url: str | None, tmp_path: Path) -> None:
    server = dbs.require_pg(pg_server_url)
    url = dbs.create_pg_database(server)
    try:
        dbs.migrate(url)
        engine = make_engine(url, poolclass=NullPool)
        sessions = make_sessionmaker(engine)
        ledger = await make_ledger(sessions, tmp_path / "keys")
        await append_n(ledger, 5)  # rows written before the conversion are copied
        async with engine.begin() as conn:
            await partition_log(conn, span=4, partitions=2)  # [0,4) [4,8) + DEFAULT
            assert await add_partitions(conn, 4, 12) == ["log_entries_p000002"]  # ahead of growth: [8,12)
            assert await add_partitions(conn, 4, 12) == []
        await append_n(ledger, 6, start=5)  # 11 leaves: 4 + 4 + 3
        async with engine.begin() as conn:
            kind = await conn.scalar(text("SELECT relkind::text FROM pg_class WHERE relname = 'log_entries'"))
            per_partition = dict(
                (
                    await conn.execute(text("SELECT tableoid::regclass::text, count(*) FROM log_entries GROUP BY 1"))
                ).all()
            )
        assert kind == "p"
        assert per_partition == {"log_entries_p000000": 4, "log_entries_p000001": 4, "log_entries_p000002": 3}
        checkpoint = await ledger.checkpoint()
        assert checkpoint.size == 11
        for index in (0, 4, 10):
            proof = await ledger.inclusion_proof(index, checkpoint.size)
            verify_inclusion(proof.leaf_hash, index, checkpoint.size, proof.hashes, proof.root)  # raises if not
        for statement in ("UPDATE log_entries SET record_type = 'x' WHERE idx = 1", "DELETE FROM log_entries"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(text(statement))
        await engine.dispose()
    finally:
        dbs.drop_pg_database(server, url)
