"""Tables for clearing rounds: one row per round (statistics, audit, pricing rule) and its posted prices."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base

ROUND_STATUSES = ("running", "completed", "failed", "abandoned")


class Round(Base):
    """A clearing round: started as `running`, finished `completed` (or `failed`); a round whose process
    died is marked `abandoned` by the next round (it left no contracts: they commit with the round)."""

    __tablename__ = "rounds"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    started_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="running")
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)
    market_now: Mapped[int | None] = mapped_column(BigInteger)
    snapshot_hash: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(16))
    pricing_rule: Mapped[str | None] = mapped_column(Text)
    orders_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    offers_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    contracts_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    matched_orders: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    matched_devices: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    dropped_allocations: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # one entry per allocation dropped at commit: order, offer, devices, interval and the reason
    dropped: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    expired_orders: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    welfare_fen: Mapped[int | None] = mapped_column(BigInteger)
    lp_bound_fen: Mapped[int | None] = mapped_column(BigInteger)
    gap: Mapped[str | None] = mapped_column(String(24))
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    audit: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_rounds_started_at", "started_at"), Index("ix_rounds_status", "status"))


class RoundPrice(Base):
    """A posted clearing price of one round: class (region, model), gang size, lease and start slot."""

    __tablename__ = "round_prices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id"), nullable=False, index=True)
    cleared_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    region: Mapped[str] = mapped_column(String(8), nullable=False)
    model: Mapped[str] = mapped_column(String(32), nullable=False)
    family: Mapped[str] = mapped_column(String(32), nullable=False)
    gang: Mapped[int] = mapped_column(Integer, nullable=False)
    lease_slots: Mapped[int] = mapped_column(Integer, nullable=False)
    start_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    buyer_price: Mapped[str] = mapped_column(String(32), nullable=False)
    buyer_price_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    min_ask_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    rent: Mapped[str] = mapped_column(String(32), nullable=False)

    __table_args__ = (Index("ix_round_prices_region_family_cleared_at", "region", "family", "cleared_at"),)
