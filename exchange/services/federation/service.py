"""One exchange's federation, assembled from its roles; the dispatcher for peer POSTs and the background loops.

`Federation.build` wires the roles to one FederationContext (the composition root calls it); API handlers and
the CLI call the role that owns what they need (e.g. `federation.peers.add_peer`, `federation.resync`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.services.federation.commits import Commits
from exchange.services.federation.context import FederationContext, log
from exchange.services.federation.events import EventLog
from exchange.services.federation.gate import PeerGate, purge_peer_nonces
from exchange.services.federation.inbound import OwnerSide
from exchange.services.federation.mirror import Mirror
from exchange.services.federation.outbound import BuyerSide
from exchange.services.federation.peers import PeerDirectory
from exchange.services.federation.reads import Reads
from exchange.services.federation.recovery import Recovery
from exchange.services.federation.resync import Resync
from exchange.services.federation.summaries import Summaries
from exchange.services.identity import IdentityService
from exchange.services.ledger import LedgerService
from exchange.settings import Settings
from exchange.storage.base import now_s
from identifiers.catalogue import Catalogue
from identifiers.errors import ValidationError

SUMMARY_MIN_GAP_SECONDS = 0.5


@dataclass
class Federation:
    """Every federation role of one exchange, sharing one context."""

    ctx: FederationContext
    events: EventLog
    peers: PeerDirectory
    gate: PeerGate
    summaries: Summaries
    inbound: OwnerSide
    commits: Commits
    outbound: BuyerSide
    mirror: Mirror
    resync: Resync
    recovery: Recovery
    reads: Reads

    @classmethod
    def build(
        cls,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        identity: IdentityService,
        ledger: LedgerService,
        *,
        clock: Callable[[], int] = now_s,
        catalogue: Catalogue | None = None,
    ) -> Federation:
        """Wire every role to one context."""
        ctx = FederationContext(sessions, settings, identity, ledger, clock=clock, catalogue=catalogue)
        events = EventLog(ctx)
        peers = PeerDirectory(ctx)
        summaries = Summaries(ctx, peers, events)
        inbound = OwnerSide(ctx, events)
        commits = Commits(ctx, peers, events)
        mirror = Mirror(ctx)
        resync = Resync(ctx, peers, summaries, commits, events)
        return cls(
            ctx=ctx,
            events=events,
            peers=peers,
            gate=PeerGate(ctx, peers),
            summaries=summaries,
            inbound=inbound,
            commits=commits,
            outbound=BuyerSide(ctx, peers, summaries, commits, events),
            mirror=mirror,
            resync=resync,
            recovery=Recovery(ctx, peers, resync, events),
            reads=Reads(ctx, peers, inbound, mirror, events),
        )

    async def handle(
        self,
        kind: str,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        hold_id: str | None = None,
    ) -> dict[str, Any]:
        """Verify and dispatch one inbound peer request (the only entry point of peer POST routes)."""
        v = await self.gate.verify_inbound(method, url, headers, body, kind)
        if kind == "capacity_summary":
            return await self.summaries.receive_summary(v)
        if kind == "order_offer":
            return await self.inbound.receive_order(v)
        if kind in ("hold_commit", "hold_release"):
            if hold_id is not None and v.body.get("hold_id") != hold_id:
                raise ValidationError("hold_id in the body does not match the URL", field="hold_id")
            if kind == "hold_commit":
                return await self.inbound.receive_commit(v)
            return await self.inbound.receive_release(v)
        if kind == "mirror":
            return await self.mirror.receive_mirror(v)
        raise ValidationError(f"unknown message kind {kind}", field="type")

    def stats(self) -> dict[str, Any]:
        """Messages sent by type, orders forwarded/committed, and forward latency percentiles (ms)."""
        out = self.outbound
        lat = sorted(out.forward_latency_ms)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)

        return {
            "messages_sent": dict(self.ctx.client.sent),
            "orders_forwarded": out.orders_forwarded,
            "orders_committed": out.orders_committed,
            "refused_messages": dict(sorted(self.gate.refusals.counts.items())),
            "forward_latency_samples_ms": [round(x, 2) for x in list(out.forward_latency_ms)[-1000:]],
            "forward_latency_ms": {
                "count": len(lat),
                "p50": pct(0.50),
                "p99": pct(0.99),
                "max": lat[-1] if lat else None,
            },
        }

    async def _loop(
        self, name: str, interval: float, step: Callable[[], Awaitable[Any]], wake: asyncio.Event | None
    ) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("federation %s failed; retrying in %s s", name, interval)
            if wake is None:
                await asyncio.sleep(interval)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=interval)
                wake.clear()

    async def _forward_tick(self) -> None:
        # a member of a hub forwards only what the hub routes (device and SCU orders alike)
        if not self.ctx.settings.federation_hub:
            await self.outbound.forward_open_orders()
        await self.mirror.deliver_outbox()

    async def _publish_tick(self) -> None:
        await self.summaries.publish_summary()
        # on demand publication is rate limited: triggers during this pause coalesce into one publication
        await asyncio.sleep(SUMMARY_MIN_GAP_SECONDS)

    async def _sweep_tick(self) -> None:
        await self.inbound.expire_holds()
        await purge_peer_nonces(self.ctx.sessions, self.ctx.clock())

    def background_tasks(self) -> list[Coroutine[Any, Any, None]]:
        """The loops `hetex serve` runs (each interval 0 disables its loop)."""
        s = self.ctx.settings
        loops: list[Coroutine[Any, Any, None]] = []
        if s.federation_summary_interval_seconds > 0:
            loops.append(
                self._loop(
                    "summary", s.federation_summary_interval_seconds, self._publish_tick, self.ctx.publish_wanted
                )
            )
        if s.federation_sync_interval_seconds > 0:
            loops.append(self._loop("sync", s.federation_sync_interval_seconds, self.resync.sync_all, None))
        if s.federation_forward_interval_seconds > 0:
            loops.append(
                self._loop(
                    "forward", s.federation_forward_interval_seconds, self._forward_tick, self.ctx.forward_wanted
                )
            )
        if s.federation_sweep_interval_seconds > 0:
            loops.append(self._loop("sweep", s.federation_sweep_interval_seconds, self._sweep_tick, None))
        return loops

    def request_forward(self) -> None:
        """Wake the forwarder now (e.g. a new order arrived or a round ended with open orders)."""
        self.ctx.forward_wanted.set()

    async def close(self) -> None:
        """Close the peer HTTP session."""
        await self.ctx.client.close()
