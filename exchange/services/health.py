"""Liveness: the process answers and its database does a round trip."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@dataclass
class HealthService:
    """What /healthz reports."""

    sessions: async_sessionmaker[AsyncSession]
    authority: str

    async def check(self) -> dict[str, Any]:
        """One database round trip; raises (-> problem 500, logged) if the database does not answer."""
        async with self.sessions() as session:
            await session.execute(text("SELECT 1"))
        return {"status": "ok", "authority": self.authority}
