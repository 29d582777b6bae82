"""Table of web console sessions: a one-time sign-in code, then an expiring browser session of one participant."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base, CreatedAt


class WebSession(CreatedAt, Base):
    """One browser session; only SHA-256 digests of the code and the cookie token are stored."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), nullable=False)
    code_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    code_expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    activated_at: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    user_agent: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (Index("ix_web_sessions_participant_id_created_at", "participant_id", "created_at"),)
