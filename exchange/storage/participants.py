"""Tables for participants, their signed registration records, and remembered request nonces."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base, CreatedAt


class Participant(CreatedAt, Base):
    """A provider, buyer, regulator, peer exchange or operator, identified by its Ed25519 key."""

    __tablename__ = "participants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    public_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    key_id: Mapped[str] = mapped_column(String(16), nullable=False, unique=True)
    operator_code: Mapped[str | None] = mapped_column(String(8), unique=True)
    home_region: Mapped[str | None] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")


class RegistrationRecord(CreatedAt, Base):
    """The signed HTTP request that created or changed a registration, kept verbatim for regulators."""

    __tablename__ = "registration_records"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), nullable=False, index=True)
    action: Mapped[str] = mapped_column(String(40), nullable=False)
    subject: Mapped[str] = mapped_column(String(120), nullable=False, index=True)
    method: Mapped[str] = mapped_column(String(8), nullable=False)
    target_uri: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    content_digest: Mapped[str] = mapped_column(Text, nullable=False)
    signature_input: Mapped[str] = mapped_column(Text, nullable=False)
    signature: Mapped[str] = mapped_column(Text, nullable=False)


class SeenNonce(Base):
    """A request nonce remembered for the signature window, so a replay is refused in every process."""

    __tablename__ = "seen_nonces"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (Index("ix_seen_nonces_expires_at", "expires_at"),)
