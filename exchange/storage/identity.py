"""Table of the exchange's own signing keys, so records and checkpoints signed before a rotation stay verifiable."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base, CreatedAt

KEY_STATUSES = ("current", "retired", "revoked")


class ExchangeKey(CreatedAt, Base):
    """One Ed25519 key the exchange signs with (current) or signed with (retired); revoked keys are not trusted."""

    __tablename__ = "exchange_keys"
    # at most one current key: two processes can never both make "their" key current
    __table_args__ = (
        Index(
            "uq_exchange_keys_one_current",
            "status",
            unique=True,
            postgresql_where=text("status = 'current'"),
            sqlite_where=text("status = 'current'"),
        ),
    )

    key_id: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    public_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    not_before: Mapped[int] = mapped_column(BigInteger, nullable=False)
    not_after: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="current")
