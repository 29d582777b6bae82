"""Table of regulator audit export jobs: filters, status, progress and the finished bundle file."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base, CreatedAt

EXPORT_STATUSES = ("queued", "running", "done", "failed")


class AuditExport(CreatedAt, Base):
    """One export job of one regulator; only that regulator may read it or its bundle."""

    __tablename__ = "audit_exports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    regulator_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    period_from: Mapped[int] = mapped_column(BigInteger, nullable=False)
    period_to: Mapped[int] = mapped_column(BigInteger, nullable=False)
    region: Mapped[str | None] = mapped_column(String(8))
    operator: Mapped[str | None] = mapped_column(String(8))
    model_family: Mapped[str | None] = mapped_column(String(64))
    since_sizes: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    checkpoint_size: Mapped[int | None] = mapped_column(BigInteger)
    records_total: Mapped[int | None] = mapped_column(BigInteger)
    records_done: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    records_exported: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    bundle_file: Mapped[str | None] = mapped_column(String(200))
    bundle_sha256: Mapped[str | None] = mapped_column(String(64))
    bundle_bytes: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    # the job lease: the process running it (a token), until when, and how many times it was started
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_audit_exports_regulator_id_created_at", "regulator_id", "created_at"),
        Index("ix_audit_exports_status_lease_expires_at", "status", "lease_expires_at"),
    )
