"""Imports every table module so `Base.metadata` is complete (Alembic and the schema test use it)."""

from exchange.storage import (
    audit,
    contracts,
    federation,
    identity,
    leases,
    ledger,
    orders,
    participants,
    registration,
    rounds,
    settlement,
    web,
)
from exchange.storage.base import Base

__all__ = [
    "Base",
    "audit",
    "contracts",
    "federation",
    "identity",
    "leases",
    "ledger",
    "orders",
    "participants",
    "registration",
    "rounds",
    "settlement",
    "web",
]
