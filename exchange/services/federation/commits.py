"""The buyer's side, second phase: commit the holds peers granted (sign, send, keep the countersigned
contracts), release the ones not wanted, and retry commits a peer outage left pending."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from exchange.services.federation.context import FederationContext, log, peer_identity
from exchange.services.federation.contracts import peer_contract
from exchange.services.federation.events import EventLog
from exchange.services.federation.peers import PeerDirectory
from exchange.services.peer_client import PeerRefusedError, PeerUnavailableError
from exchange.storage.federation import OutboundHold, Peer, PeerContract
from exchange.storage.orders import Order
from federation.peering import PeerIdentity, sign_contract, verify_contract
from identifiers.errors import AuthenticationError, ValidationError
from identifiers.ids import new_id_str


@dataclass(frozen=True)
class HeldAtPeer:
    """A hold a peer granted for one of our orders, as answered (kept in memory until commit)."""

    outbound_id: str
    order_id: str
    peer: PeerIdentity
    remote_hold_id: str
    lines: list[dict[str, Any]]
    devices: int
    expires_at: int


class Commits:
    """Commits, releases and reconciles this exchange's outbound holds (OutboundHold rows)."""

    def __init__(self, ctx: FederationContext, peers: PeerDirectory, events: EventLog) -> None:
        self.ctx = ctx
        self.peers = peers
        self.events = events
        self._committing: set[str] = set()

    async def set_outbound(self, outbound_id: str, **values: Any) -> None:
        """Update one outbound hold row (own transaction)."""
        values["updated_at"] = self.ctx.clock()
        async with self.ctx.sessions.begin() as session:
            await session.execute(update(OutboundHold).where(OutboundHold.id == outbound_id).values(**values))

    async def release(self, outbound_id: str, peer: PeerIdentity, remote_hold_id: str) -> None:
        """Ask the owner to release a hold (best effort: an unreleased hold expires on its own)."""
        msg = self.ctx.client.build(peer, "hold_release", {"hold_id": remote_hold_id})
        try:
            await self.ctx.client.send(peer, f"/v1/federation/holds/{remote_hold_id}/release", msg)
        except (PeerUnavailableError, PeerRefusedError) as exc:
            log.info("release of hold %s at %s failed (%s); it will expire", remote_hold_id, peer.authority, exc)
        await self.set_outbound(outbound_id, status="released", remote_hold_id=remote_hold_id)

    async def commit_outbound(self, outbound_id: str, held: HeldAtPeer | None = None) -> int:
        """Sign the held contracts and commit them at the owner (idempotent: retried with the same message id
        until the owner answers); on success append the two-signature contracts to this log. Devices won.
        `held` is the fresh hold from forward_order; without it (a retry) the `committing` row is read."""
        if outbound_id in self._committing:
            return 0
        self._committing.add(outbound_id)
        try:
            return await self._commit_outbound(outbound_id, held)
        finally:
            self._committing.discard(outbound_id)

    async def _commit_outbound(self, outbound_id: str, held: HeldAtPeer | None) -> int:
        ctx = self.ctx
        message_id = new_id_str()
        if held is not None:
            async with ctx.sessions.begin() as session:
                moved = await session.execute(
                    update(OutboundHold)
                    .where(OutboundHold.id == outbound_id, OutboundHold.status == "requested")
                    .values(
                        status="committing",
                        remote_hold_id=held.remote_hold_id,
                        lines=held.lines,
                        devices=held.devices,
                        expires_at=held.expires_at,
                        commit_message_id=message_id,
                        updated_at=ctx.clock(),
                    )
                )
            if getattr(moved, "rowcount", 0) != 1:
                return 0  # the reconciler gave up on it meanwhile; the owner's hold expires
            peer, order_id, lines, remote_hold_id = held.peer, held.order_id, held.lines, held.remote_hold_id
        else:
            async with ctx.sessions() as session:
                row = await session.get(OutboundHold, outbound_id)
                if row is None or row.status != "committing" or row.remote_hold_id is None:
                    return 0
                peer_row = await session.get(Peer, row.peer_authority)
            assert peer_row is not None
            peer, order_id, lines, remote_hold_id = (
                peer_identity(peer_row), row.order_id, list(row.lines or []), row.remote_hold_id
            )  # fmt: skip
            message_id = row.commit_message_id or message_id
        me = ctx.me
        envelopes = [sign_contract(line["body"], me) for line in lines]
        msg = ctx.client.build(
            peer, "hold_commit", {"hold_id": remote_hold_id, "contracts": envelopes}, message_id=message_id
        )
        try:
            resp = await ctx.client.send(peer, f"/v1/federation/holds/{remote_hold_id}/commit", msg)
        except PeerUnavailableError as exc:
            await self.peers.mark(peer.authority, ok=False, error=exc.message)
            return 0  # stays `committing`: resync retries with the same message id
        except PeerRefusedError as exc:
            await self.set_outbound(outbound_id, status="failed", error=exc.message)
            return 0
        if resp.get("status") != "committed":
            await self.set_outbound(outbound_id, status="failed", error=str(resp.get("reason")))
            return 0
        by_id = {line["contract_id"]: line["body"] for line in lines}
        returned = list(resp.get("contracts") or [])
        now = ctx.clock()
        try:
            checked = []
            for item in returned:
                body = verify_contract(item["envelope"], peer, me.identity)
                if by_id.get(str(item.get("contract_id"))) != body:
                    raise ValidationError("committed contract differs from the held one", field="contracts")
                checked.append((body, item["envelope"]))
            if len(checked) != len(lines):
                raise ValidationError("owner did not return every held contract", field="contracts")
        except (AuthenticationError, ValidationError, KeyError, TypeError) as exc:
            await self.set_outbound(outbound_id, status="failed", error=f"bad commit answer: {exc}")
            await self.events.record("bad_commit", peer.authority, {"outbound": outbound_id, "error": str(exc)})
            return 0
        devices = 0
        async with ctx.sessions.begin() as session:
            current = await session.get(OutboundHold, outbound_id)
            if current is None or current.status == "committed":
                return 0
            for body, env in checked:
                if await session.get(PeerContract, body["contract_id"]) is not None:
                    continue
                appended = await ctx.ledger.append_signed(session, "contract", body["contract_id"], env)
                session.add(peer_contract("buyer", peer.authority, order_id, body, appended, now))
                devices += int(body["devices"])
            fresh = await session.get(Order, order_id)
            assert fresh is not None
            fresh.filled_devices = (fresh.filled_devices or 0) + devices
            if fresh.quantity_devices is not None:
                fresh.status = "filled" if fresh.filled_devices >= fresh.quantity_devices else "partially_filled"
            fresh.updated_at = now
            current.status = "committed"
            current.updated_at = now
        await self.peers.mark(peer.authority, ok=True)
        return devices

    async def reconcile_outbound(self) -> dict[str, int]:
        """Retry commits left `committing` (peer was down), and give up on requests/holds a crash left behind."""
        now = self.ctx.clock()
        stale_request = now - 2 * int(self.ctx.settings.federation_peer_timeout_seconds) - 2
        async with self.ctx.sessions.begin() as session:
            r1 = await session.execute(
                update(OutboundHold)
                .where(OutboundHold.status == "requested", OutboundHold.created_at < stale_request)
                .values(status="failed", error="no answer (abandoned)", updated_at=now)
            )
            r2 = await session.execute(
                update(OutboundHold)
                .where(OutboundHold.status == "held", OutboundHold.expires_at < now - 1)
                .values(status="failed", error="hold expired before commit", updated_at=now)
            )
            committing = (
                await session.scalars(select(OutboundHold.id).where(OutboundHold.status == "committing"))
            ).all()
        retried = 0
        for outbound_id in committing:
            if outbound_id in self._committing:
                continue  # this process is committing it right now
            retried += 1 if await self.commit_outbound(outbound_id) else 0
        return {
            "abandoned": int(getattr(r1, "rowcount", 0) or 0) + int(getattr(r2, "rowcount", 0) or 0),
            "committed_on_retry": retried,
        }
