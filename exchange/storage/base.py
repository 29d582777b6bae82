"""Declarative base with a constraint naming convention so Alembic names match on every database."""

from __future__ import annotations

import time

from sqlalchemy import BigInteger, MetaData
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Every hetex table derives from this; times are integer epoch seconds, money integer fen."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def now_s() -> int:
    """Wall-clock epoch seconds (one place, so tests and services agree on the unit)."""
    return int(time.time())


class CreatedAt:
    """Mixin: creation time in epoch seconds."""

    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s, nullable=False)
