"""Tables for node-signed usage reports, settlement records (append-only by convention) and their batches."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base, CreatedAt


class UsageReport(CreatedAt, Base):
    """One accepted usage report: the provider-signed DSSE envelope plus the columns settlement sums."""

    __tablename__ = "usage_reports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"), nullable=False)
    meter_id: Mapped[str] = mapped_column(String(64), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    period_start: Mapped[int] = mapped_column(BigInteger, nullable=False)
    period_end: Mapped[int] = mapped_column(BigInteger, nullable=False)
    device_minutes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    availability_bps: Mapped[int] = mapped_column(Integer, nullable=False)
    payload_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    envelope: Mapped[str] = mapped_column(Text, nullable=False)
    signer_key_id: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="accepted")
    flags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    log_index: Mapped[int | None] = mapped_column(BigInteger)
    settlement_id: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (
        UniqueConstraint("contract_id", "meter_id", "seq"),
        Index("ix_usage_reports_contract_id_period_start", "contract_id", "period_start"),
        Index("ix_usage_reports_settlement_id", "settlement_id"),
    )


class SettlementBatch(CreatedAt, Base):
    """One settlement run: all of its records commit in one transaction with it, or none do."""

    __tablename__ = "settlement_batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    as_of: Mapped[int] = mapped_column(BigInteger, nullable=False)
    records: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    first_log_index: Mapped[int | None] = mapped_column(BigInteger)
    last_log_index: Mapped[int | None] = mapped_column(BigInteger)


class SettlementRecord(CreatedAt, Base):
    """Postings for one contract period; a correction is a new row with revision + 1 and supersedes_id."""

    __tablename__ = "settlement_records"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"), nullable=False)
    batch_id: Mapped[str] = mapped_column(ForeignKey("settlement_batches.id"), nullable=False, index=True)
    period_start: Mapped[int] = mapped_column(BigInteger, nullable=False)
    period_end: Mapped[int] = mapped_column(BigInteger, nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    billing_mode: Mapped[str] = mapped_column(String(24), nullable=False)
    device_minutes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    buyer_debit_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    provider_credit_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fee_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    usage_ids: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    supersedes_id: Mapped[str | None] = mapped_column(ForeignKey("settlement_records.id"), unique=True)
    log_index: Mapped[int | None] = mapped_column(BigInteger)
    envelope: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (
        UniqueConstraint("contract_id", "period_start", "revision"),
        Index("ix_settlement_records_contract_id_period_start", "contract_id", "period_start"),
    )
