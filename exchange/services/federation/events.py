"""Operator-visible federation events: refused summaries, bad holds and commits, expired holds, log forks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from exchange.services.federation.context import FederationContext, log
from exchange.storage.federation import FederationEvent
from identifiers.ids import new_id_str


class EventLog:
    """Stores events (each in its own transaction) and lists them newest first."""

    def __init__(self, ctx: FederationContext) -> None:
        self.ctx = ctx

    async def record(self, kind: str, peer: str | None, detail: Mapping[str, Any]) -> None:
        """Store an operator-visible event (own transaction) and log it."""
        log.warning("federation event %s peer=%s %s", kind, peer, dict(detail))
        async with self.ctx.sessions.begin() as session:
            session.add(
                FederationEvent(
                    id=new_id_str(), at=self.ctx.clock(), peer_authority=peer, kind=kind, detail=dict(detail)
                )
            )

    async def recent(self, limit: int = 100, kind: str | None = None) -> list[dict[str, Any]]:
        """Newest events first."""
        async with self.ctx.sessions() as session:
            stmt = select(FederationEvent).order_by(FederationEvent.at.desc(), FederationEvent.id.desc()).limit(limit)
            if kind is not None:
                stmt = stmt.where(FederationEvent.kind == kind)
            rows = (await session.scalars(stmt)).all()
        return [{"id": r.id, "at": r.at, "peer": r.peer_authority, "kind": r.kind, "detail": r.detail} for r in rows]
