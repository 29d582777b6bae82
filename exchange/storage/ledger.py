"""Tables of the transparency log: entries, stored perfect-subtree nodes, the locked counter, checkpoints.

Append-only is enforced three times: database triggers created by migration 0003 (plpgsql on
PostgreSQL, RAISE(ABORT) on SQLite) and, in code, SQLAlchemy events that refuse any ORM update or
delete of these tables with `AppendOnlyError`.

Tree layout (see federation.merkle): leaf hashes live in `log_entries.leaf_hash` (level 0); every
completed perfect subtree of level >= 1 is a `log_nodes` row (level, index) covering leaves
[index * 2**level, (index + 1) * 2**level). `log_counter` is one row (id 1) holding the next index and
the frontier (compact range) of the tree, locked by every append.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Integer, LargeBinary, String, Text, event
from sqlalchemy.orm import Mapped, Mapper, Session, mapped_column

from exchange.storage.base import Base, CreatedAt
from identifiers.errors import ConflictError

COUNTER_ROW_ID = 1


class AppendOnlyError(ConflictError):
    """Something tried to change or delete a transparency log row; the log only grows."""

    code = "log_append_only"


class LogEntry(CreatedAt, Base):
    """One log leaf: the stored bytes (canonical DSSE envelope) are exactly what is leaf-hashed."""

    __tablename__ = "log_entries"

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    record_type: Mapped[str] = mapped_column(String(40), nullable=False)
    record_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)


class LogNode(Base):
    """Hash of the perfect subtree (level >= 1, index): written once, when its last leaf is appended."""

    __tablename__ = "log_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)


class LogCounter(Base):
    """The single row every append locks: next leaf index and the tree frontier at that size."""

    __tablename__ = "log_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    next_index: Mapped[int] = mapped_column(BigInteger, nullable=False)
    frontier: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class Checkpoint(CreatedAt, Base):
    """A signed C2SP checkpoint note of the tree at `size` (one per size; never changed)."""

    __tablename__ = "checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False)
    key_id: Mapped[str] = mapped_column(String(8), nullable=False)


APPEND_ONLY_MODELS: tuple[type[Base], ...] = (LogEntry, LogNode, Checkpoint)
APPEND_ONLY_TABLES = frozenset(m.__tablename__ for m in APPEND_ONLY_MODELS)


def _refuse(_mapper: Mapper[Any], _connection: Any, target: Any) -> None:
    raise AppendOnlyError(f"{type(target).__tablename__} rows are append-only: refusing to change or delete one")


for _model in APPEND_ONLY_MODELS:
    event.listen(_model, "before_update", _refuse)
    event.listen(_model, "before_delete", _refuse)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk(state: Any) -> None:
    """Refuse `session.execute(update(LogEntry)...)` / `delete(...)` too (they bypass mapper events)."""
    if not (state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    if name in APPEND_ONLY_TABLES:
        raise AppendOnlyError(f"{name} rows are append-only: refusing bulk update or delete")
