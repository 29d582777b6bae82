"""Tables for provider sites (data-centre nodes), accelerator pools and capacity offers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base, CreatedAt


class Site(CreatedAt, Base):
    """A provider's data-centre node, named by a site CRI; deregistration leaves a tombstone."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cri: Mapped[str] = mapped_column(String(80), nullable=False, unique=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), nullable=False, index=True)
    region: Mapped[str] = mapped_column(String(8), nullable=False)
    site_code: Mapped[str] = mapped_column(String(8), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    pue: Mapped[Any | None] = mapped_column(Numeric(6, 3))
    green_share: Mapped[Any | None] = mapped_column(Numeric(5, 4))
    interconnect: Mapped[str | None] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    last_heartbeat_at: Mapped[int | None] = mapped_column(BigInteger)
    tombstoned_at: Mapped[int | None] = mapped_column(BigInteger)


class Pool(CreatedAt, Base):
    """A set of identical accelerators at one site, named by a pool CRI."""

    __tablename__ = "pools"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cri: Mapped[str] = mapped_column(String(80), nullable=False, unique=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), nullable=False, index=True)
    model: Mapped[str] = mapped_column(String(32), nullable=False)
    devices: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_gb: Mapped[int] = mapped_column(Integer, nullable=False)
    intra_node_link: Mapped[str | None] = mapped_column(String(80))
    nodes: Mapped[int] = mapped_column(Integer, nullable=False)
    devices_per_node: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    tombstoned_at: Mapped[int | None] = mapped_column(BigInteger)


class Offer(CreatedAt, Base):
    """Capacity a provider offers from one pool: devices, window, minimum lease, ask (fen/device-hour)."""

    __tablename__ = "offers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id"), nullable=False, index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), nullable=False, index=True)
    devices: Mapped[int] = mapped_column(Integer, nullable=False)
    window_start: Mapped[int] = mapped_column(BigInteger, nullable=False)
    window_end: Mapped[int | None] = mapped_column(BigInteger)
    min_lease_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=3600)
    ask_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    billing_modes: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    updated_at: Mapped[int | None] = mapped_column(BigInteger)
