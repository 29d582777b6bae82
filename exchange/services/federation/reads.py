"""Who may read which federation records: the operator everything, a peer exchange only what concerns it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from exchange.services.federation.context import FederationContext
from exchange.services.federation.contracts import contracts_view
from exchange.services.federation.events import EventLog
from exchange.services.federation.inbound import OwnerSide
from exchange.services.federation.mirror import Mirror
from exchange.services.federation.peers import PeerDirectory
from exchange.services.principals import NotOwnerError, Principal, RoleForbiddenError
from exchange.storage.federation import Peer


class Reads:
    """The signed GET routes of /v1/federation: scope the caller, then read from the role that owns the data."""

    def __init__(
        self, ctx: FederationContext, peers: PeerDirectory, inbound: OwnerSide, mirror: Mirror, events: EventLog
    ) -> None:
        self.ctx = ctx
        self.peers = peers
        self.inbound = inbound
        self.mirror = mirror
        self.events = events

    async def reader_scope(self, who: Principal, *, operator_only: bool = False) -> str | None:
        """Who may read federation records: None for the operator (everything), the peer's authority for a
        peer exchange (only what concerns it); RoleForbiddenError (403) for anyone else."""
        who.require_role(*(("operator",) if operator_only else ("operator", "peer")), action="read federation records")
        if who.role == "operator":
            return None
        async with self.ctx.sessions() as session:
            authority = await session.scalar(
                select(Peer.authority).where(Peer.participant_id == who.id, Peer.status == "active")
            )
        if authority is None:
            raise RoleForbiddenError(
                "this peer key belongs to no active peer exchange", reason="role_forbidden", role=who.role
            )
        return str(authority)

    @staticmethod
    def _own_peer(scope: str | None, asked: str | None) -> str | None:
        """The peer filter a caller may use: its own authority for a peer (NotOwnerError if it asks for
        another's), whatever was asked for the operator."""
        if scope is None:
            return asked
        if asked and asked != scope:
            raise NotOwnerError("a peer exchange reads only its own federation records", reason="not_owner")
        return scope

    async def contracts_view(self, peer: str | None = None, order_id: str | None = None) -> list[dict[str, Any]]:
        """Cross-exchange contracts known here (both sides), oldest first (unscoped: for the operator)."""
        return await contracts_view(self.ctx.sessions, peer, order_id)

    async def contracts_for(
        self, who: Principal, peer: str | None = None, order_id: str | None = None
    ) -> list[dict[str, Any]]:
        """GET /v1/federation/contracts: every contract for the operator, a peer's own for a peer."""
        scope = await self.reader_scope(who)
        return await self.contracts_view(self._own_peer(scope, peer), order_id)

    async def holds_for(self, who: Principal, status: str | None = None) -> list[dict[str, Any]]:
        """GET /v1/federation/holds: every hold for the operator, the holds granted to a peer for that peer."""
        scope = await self.reader_scope(who)
        return await self.inbound.holds_view(status, peer=scope)

    async def mirrored_for(self, who: Principal, contract_id: str | None = None) -> list[dict[str, Any]]:
        """GET /v1/federation/mirrored: every record for the operator, the ones a peer mirrored for that peer."""
        scope = await self.reader_scope(who)
        return await self.mirror.mirrored_view(contract_id, peer=scope)

    async def events_for(self, who: Principal, limit: int = 100, kind: str | None = None) -> list[dict[str, Any]]:
        """GET /v1/federation/events: operator only (events name every peer and hold refusal details)."""
        await self.reader_scope(who, operator_only=True)
        return await self.events.recent(limit, kind)

    async def peers_for(self, who: Principal) -> list[dict[str, Any]]:
        """GET /v1/federation/peers: operator only (peer URLs, reachability and last errors are internal)."""
        await self.reader_scope(who, operator_only=True)
        return await self.peers.peers_view()
