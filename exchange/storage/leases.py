"""Table of singleton leases: which process runs the timed duties, and the fencing epoch of its tenure."""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base


class Lease(Base):
    """One named lease; `epoch` grows by one at every takeover, so a write fenced on an older epoch is refused."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    holder: Mapped[str | None] = mapped_column(String(200))
    acquired_at: Mapped[int | None] = mapped_column(BigInteger)
