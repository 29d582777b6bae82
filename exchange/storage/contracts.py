"""Table for contracts: one order, one pool, devices over [start, end), prices in fen per device-hour."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base, CreatedAt


class Contract(CreatedAt, Base):
    """A match turned obligation; it also reserves the pool's devices for its time span."""

    __tablename__ = "contracts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    round_id: Mapped[str | None] = mapped_column(String(36), index=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), nullable=False, index=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id"), nullable=False)
    offer_id: Mapped[str | None] = mapped_column(ForeignKey("offers.id"))
    buyer_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), nullable=False, index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), nullable=False, index=True)
    model: Mapped[str] = mapped_column(String(32), nullable=False)
    region: Mapped[str] = mapped_column(String(8), nullable=False)
    devices: Mapped[int] = mapped_column(Integer, nullable=False)
    start_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    end_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    buyer_price_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    provider_price_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fee_bps: Mapped[int] = mapped_column(Integer, nullable=False)
    billing_mode: Mapped[str] = mapped_column(String(24), nullable=False)
    billing_terms: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    confirmed_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger)
    cancel_reason: Mapped[str | None] = mapped_column(String(200))
    log_index: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_contracts_pool_id_start_at_end_at", "pool_id", "start_at", "end_at"),)
