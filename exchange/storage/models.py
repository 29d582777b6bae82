"""Imports every table module so `Base.metadata` is complete (Alembic and the schema test use it)."""

from exchange.storage import contracts, orders, participants, registration, rounds
from exchange.storage.base import Base

__all__ = ["Base", "contracts", "orders", "participants", "registration", "rounds"]
