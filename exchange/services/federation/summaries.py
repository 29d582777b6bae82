"""Signed capacity summaries: this exchange's own (built, versioned, published) and the peers' (kept).

A summary says what an exchange could fill soon, per region x model; the buyer's side forwards an order only
to peers whose fresh summary could fill it (specs/federation.md has the format).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.services.federation.context import FederationContext, log, parse_body, peer_identity, peer_rows
from exchange.services.federation.events import EventLog
from exchange.services.federation.peers import PeerDirectory
from exchange.services.federation.wire import SummaryBody
from exchange.services.federation_capacity import SUMMARY_HORIZON_SECONDS, free_tranches, summarize
from exchange.services.peer_client import PeerRefusedError, PeerUnavailableError
from exchange.storage.federation import CapacitySummaryRow
from federation.peering import (
    CapacitySummary,
    PeerIdentity,
    StaleSummaryError,
    SummaryError,
    VerifiedPeerMessage,
    envelope_json,
    sign_summary,
    verify_summary,
)


class Summaries:
    """Builds and publishes this exchange's summary; accepts, lists and filters the peers' summaries."""

    def __init__(self, ctx: FederationContext, peers: PeerDirectory, events: EventLog) -> None:
        self.ctx = ctx
        self.peers = peers
        self.events = events

    async def build_summary(self) -> dict[str, Any]:
        """Compute, version (monotonic, stored) and sign this exchange's capacity summary; the envelope."""
        ctx = self.ctx
        now = ctx.clock()
        me = ctx.me
        async with ctx.sessions.begin() as session:
            tranches = await free_tranches(
                session,
                start=now,
                end=now + SUMMARY_HORIZON_SECONDS,
                now=now,
                heartbeat_timeout=ctx.settings.heartbeat_timeout_seconds,
            )
            own = await session.get(CapacitySummaryRow, ctx.authority)
            version = 1 if own is None else own.version + 1
            summary = CapacitySummary(
                origin_authority=ctx.authority,
                url=ctx.url,
                version=version,
                issued_at=now,
                expires_at=now + ctx.settings.federation_summary_ttl_seconds,
                classes=summarize(tranches),
            )
            envelope = sign_summary(summary, me)
            if own is None:
                own = CapacitySummaryRow(origin_authority=ctx.authority)
                session.add(own)
            own.version, own.issued_at, own.expires_at = version, now, summary.expires_at
            own.envelope, own.received_at = envelope, now
        return envelope

    async def own_summary(self) -> dict[str, Any]:
        """The latest own summary envelope, or a fresh one when none is valid for another half TTL."""
        async with self.ctx.sessions() as session:
            own = await session.get(CapacitySummaryRow, self.ctx.authority)
        if (
            own is not None
            and own.expires_at - self.ctx.clock() > self.ctx.settings.federation_summary_ttl_seconds // 2
        ):
            return dict(own.envelope)
        return await self.build_summary()

    async def publish_summary(self) -> dict[str, str]:
        """Build a new summary and POST it to every active peer concurrently; outcome per peer. With no peer nothing
        is built (a summary reads every pool's free capacity: at 10k sites a pause of the serving process every
        interval for nobody; `summary()` builds one on demand)."""
        peers = await self.peers.peers()
        if not peers:
            return {}
        envelope = await self.build_summary()
        client = self.ctx.client

        async def one(peer: PeerIdentity) -> tuple[str, str]:
            msg = client.build(peer, "capacity_summary", {"summary": envelope})
            try:
                await client.send(peer, "/v1/federation/summaries", msg)
            except (PeerUnavailableError, PeerRefusedError) as exc:
                await self.peers.mark(peer.authority, ok=False, error=exc.message)
                return peer.authority, f"error: {exc.message}"
            await self.peers.mark(peer.authority, ok=True)
            return peer.authority, "delivered"

        return dict(await asyncio.gather(*(one(p) for p in peers)))

    async def accept_summary(self, peer: PeerIdentity, envelope: Any) -> CapacitySummary:
        """Keep `envelope` as `peer`'s latest summary if signed by it, newer and unexpired (else raise)."""
        now = self.ctx.clock()
        async with self.ctx.sessions.begin() as session:
            row = await session.get(CapacitySummaryRow, peer.authority)
            summary = verify_summary(envelope, peer, now=now, last_version=None if row is None else row.version)
            if row is None:
                row = CapacitySummaryRow(origin_authority=peer.authority)
                session.add(row)
            row.version, row.issued_at, row.expires_at = summary.version, summary.issued_at, summary.expires_at
            row.envelope, row.received_at = envelope, now
        self.ctx.forward_wanted.set()
        return summary

    async def receive_summary(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Inbound capacity_summary: accepted or refused (unsigned, wrongly signed, stale, expired: logged)."""
        body = parse_body(SummaryBody, v.body)
        try:
            summary = await self.accept_summary(v.peer, body.summary)
        except SummaryError as exc:
            await self.events.record("refused_summary", v.peer.authority, {"reason": exc.details.get("reason")})
            raise
        except StaleSummaryError:
            log.debug("stale summary from %s (already have a newer one)", v.peer.authority)
            raise
        return {"status": "accepted", "origin": summary.origin_authority, "version": summary.version}

    async def summaries_view(self) -> list[dict[str, Any]]:
        """Every kept summary (own included) with its classes and whether it is still fresh."""
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            rows = (
                await session.scalars(select(CapacitySummaryRow).order_by(CapacitySummaryRow.origin_authority))
            ).all()
        out = []
        for r in rows:
            summary = CapacitySummary.from_json(envelope_json(r.envelope))
            out.append(
                {
                    "origin": r.origin_authority,
                    "self": r.origin_authority == self.ctx.authority,
                    "version": r.version,
                    "issued_at": r.issued_at,
                    "expires_at": r.expires_at,
                    "received_at": r.received_at,
                    "fresh": r.expires_at > now,
                    "classes": [c.to_json() for c in summary.classes],
                    "envelope": r.envelope,
                }
            )
        return out

    async def fresh(self, session: AsyncSession) -> list[tuple[PeerIdentity, CapacitySummary]]:
        """Unexpired summaries of active peers whose log is not flagged inconsistent (forwarding targets)."""
        now = self.ctx.clock()
        peers = {r.authority: r for r in await peer_rows(session)}
        rows = (
            await session.scalars(
                select(CapacitySummaryRow).where(
                    CapacitySummaryRow.expires_at > now, CapacitySummaryRow.origin_authority != self.ctx.authority
                )
            )
        ).all()
        out = []
        for r in rows:
            peer = peers.get(r.origin_authority)
            if peer is None or peer.log_status == "inconsistent":
                continue
            out.append((peer_identity(peer), CapacitySummary.from_json(envelope_json(r.envelope))))
        return out
