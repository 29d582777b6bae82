"""Table for buyer orders: the validated order body plus the columns that lists filter on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base, CreatedAt


class Order(CreatedAt, Base):
    """A buyer's order; `spec` holds the canonical order fields, `flags` why it may never fill."""

    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    buyer_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    billing_mode: Mapped[str] = mapped_column(String(24), nullable=False)
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="open")
    quantity_devices: Mapped[int | None] = mapped_column(Integer)
    filled_devices: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: an SCU order's SCU filled so far (decimal text; None: nothing yet); set by cross-exchange fills
    filled_scu: Mapped[str | None] = mapped_column(String(40))
    start_latest: Mapped[int | None] = mapped_column(BigInteger)
    flags: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    updated_at: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("buyer_id", "idempotency_key"),
        Index("ix_orders_buyer_id_created_at", "buyer_id", "created_at"),
        Index("ix_orders_status", "status"),
    )
