"""Range partitioning of the transparency log on PostgreSQL (specs/capacity.md section 5).

`log_entries` grows by every contract, usage and settlement record, never shrinks and is read by leaf index
(proofs) or by record id. Its leaf index `idx` grows with time, so ranges of `idx` are ranges of time, and
`idx` is the primary key: partitioning by RANGE (idx) keeps the primary key global (PostgreSQL requires the
partition key in every unique constraint) with no change to any query. Old partitions become read-only
files that vacuum never revisits and that can move to cheaper storage; the current one stays small enough
for its indexes to live in memory.

The conversion is an operator step on a live database (one transaction; the log is locked while the rows are
copied), not a migration: SQLite and small deployments keep the plain table. A DEFAULT partition takes rows
beyond the last declared range, so appends never fail when the operator is late adding partitions.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

PARTITIONED_TABLE = "log_entries"


def partition_name(first_index: int, span: int) -> str:
    """Name of the partition holding leaves [first_index, first_index + span)."""
    return f"{PARTITIONED_TABLE}_p{first_index // span:06d}"


def partition_ddl(first_index: int, span: int) -> str:
    """CREATE TABLE for the partition of leaves [first_index, first_index + span)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(first_index, span)} PARTITION OF {PARTITIONED_TABLE} "
        f"FOR VALUES FROM ({first_index}) TO ({first_index + span})"
    )


def conversion_ddl(span: int, partitions: int, pk_name: str = "pk_log_entries") -> list[str]:
    """Statements that turn the plain `log_entries` into one range-partitioned by `idx` (`partitions` ranges
    of `span` leaves from 0, plus a DEFAULT), copy its rows and keep the append-only triggers."""
    if span < 1 or partitions < 1:
        raise ValueError("span and partitions must be >= 1")
    t = PARTITIONED_TABLE
    statements = [
        f"LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE",
        f"ALTER TABLE {t} RENAME TO {t}_unpartitioned",
        f"ALTER INDEX ix_{t}_record_id RENAME TO ix_{t}_unpartitioned_record_id",
        f"ALTER TABLE {t}_unpartitioned RENAME CONSTRAINT {pk_name} TO {pk_name}_unpartitioned",
        f"CREATE TABLE {t} (LIKE {t}_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (idx)",
        f"ALTER TABLE {t} ADD CONSTRAINT {pk_name} PRIMARY KEY (idx)",
        f"CREATE INDEX ix_{t}_record_id ON {t} (record_id)",
        *(partition_ddl(k * span, span) for k in range(partitions)),
        f"CREATE TABLE {t}_default PARTITION OF {t} DEFAULT",
        f"INSERT INTO {t} SELECT * FROM {t}_unpartitioned",
        f"CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
        "FOR EACH ROW EXECUTE FUNCTION hetex_refuse_log_change()",
        f"CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} "
        "FOR EACH STATEMENT EXECUTE FUNCTION hetex_refuse_log_change()",
    ]
    return statements


async def partition_log(conn: AsyncConnection, span: int, partitions: int) -> None:
    """Convert `log_entries` (PostgreSQL) in the caller's transaction; the old table is kept, renamed
    `log_entries_unpartitioned`, for the operator to archive (it keeps its own append-only triggers)."""
    if conn.dialect.name != "postgresql":
        raise ValueError("log partitioning is a PostgreSQL feature; SQLite keeps the plain table")
    pk_name = await conn.scalar(
        text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) AND contype = 'p'"),
        {"t": PARTITIONED_TABLE},
    )
    for statement in conversion_ddl(span, partitions, str(pk_name)):
        await conn.execute(text(statement))


async def add_partitions(conn: AsyncConnection, span: int, up_to_index: int) -> list[str]:
    """Create the missing partitions so that leaves below `up_to_index` have one (run ahead of growth)."""
    made: list[str] = []
    for first in range(0, up_to_index, span):
        name = partition_name(first, span)
        exists = await conn.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name})
        if not exists:
            await conn.execute(text(partition_ddl(first, span)))
            made.append(name)
    return made
