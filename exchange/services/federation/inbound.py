"""The owner's side of a cross-exchange trade: offers answered with holds, commits countersigned, releases.

The owning exchange clears a forwarded order at once against its own pools (a device order in a mini-round
of the local engine with the local pricing rule, owner_round.py; an SCU order by immediate matching at the
ask), so the buyer's exchange gets an answer within one request instead of waiting for the owner's next round,
holds the capacity with an expiry, and on commit countersigns the contract the buyer's exchange signed: the
contract carries both exchanges' signatures and is appended to both logs. Holds count as reservations
(exchange.services.federation_capacity) and expire.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.services.federation.context import FederationContext, UnknownHoldError, parse_body
from exchange.services.federation.contracts import peer_contract
from exchange.services.federation.events import EventLog
from exchange.services.federation.gate import replay, store
from exchange.services.federation.owner_round import owner_round
from exchange.services.federation.wire import CommitBody, ForwardedOrder, HoldRef, contract_body_for
from exchange.services.federation_capacity import choose, free_tranches, lock_capacity, refusal_field
from exchange.storage.contracts import Contract
from exchange.storage.federation import FederationHold, FederationHoldLine, Peer
from exchange.storage.orders import Order
from federation.peering import VerifiedPeerMessage, envelope_json, message_hash, verify_contract
from identifiers.errors import AuthenticationError, ValidationError
from identifiers.ids import new_id_str


class OwnerSide:
    """Answers order_offer, hold_commit and hold_release from peers; sweeps expired holds."""

    def __init__(self, ctx: FederationContext, events: EventLog) -> None:
        self.ctx = ctx
        self.events = events
        #: Hook: the clearing-round lock (RoundService.lock.hold). A hold is granted only while no round is
        #: between its snapshot and its commit, so a round never allocates capacity a peer holds.
        self.seller_lock: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None
        #: Hook (a hub, exchange/services/hub.py): the offer cleared again on the hub's members' curves, as
        #: routes naming them (None: not a hub with member curves; the offer is then held here as usual).
        self.reroute: Callable[[ForwardedOrder, str], Awaitable[list[dict[str, Any]] | None]] | None = None

    async def receive_order(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Owner side of order_offer: immediate matching against own pools; hold what fits, with an expiry."""
        order = parse_body(ForwardedOrder, v.body.get("order"), "body.order")
        if order.end_at <= order.start_at:
            raise ValidationError("end_at must be after start_at", field="body.order.end_at")
        if order.devices_min > order.devices_max:
            raise ValidationError("devices_min must not exceed devices_max", field="body.order.devices_min")
        if self.reroute is not None:  # a regional hub named as owner by its parent: its members hold
            routes = await self.reroute(order, v.peer.authority)
            if routes:
                return {"status": "rerouted", "routes": routes}
            if routes is not None:
                return {"status": "refused", "reason": "no_capacity"}
        async with self.seller_lock() if self.seller_lock is not None else contextlib.nullcontext():
            return await self._grant_hold(v, order)

    async def _grant_hold(self, v: VerifiedPeerMessage, order: ForwardedOrder) -> dict[str, Any]:
        ctx = self.ctx
        now = ctx.clock()
        shape = order.shape(ctx.scu)
        async with ctx.sessions.begin() as session:
            await lock_capacity(session)
            stored = await replay(session, v)
            if stored is not None:
                return stored
            peer_row = await session.get(Peer, v.peer.authority)
            assert peer_row is not None and peer_row.participant_id is not None
            tranches = await free_tranches(
                session,
                start=order.start_at,
                end=order.end_at,
                now=now,
                heartbeat_timeout=ctx.settings.heartbeat_timeout_seconds,
                models=order.models,
                regions=order.regions,
            )
            if order.asks is not None:  # routed by a hub onto these ladder steps
                steps = set(order.asks)
                tranches = [t for t in tranches if t.ask_fen in steps]
            terms: dict[str, Any] = {
                "devices_max": order.devices_max,
                "devices_min": order.devices_min,
                "limits": order.limits,
                "models": order.models,
                "regions": order.regions,
                "billing_mode": order.billing_mode,
                "duration": order.end_at - order.start_at,
                "shape": shape,
            }
            if shape.quantity_scu is None:  # a device order: the local rounds' engine and pricing rule
                priced = owner_round(tranches, order, shape, fee_bps=ctx.settings.fee_bps, scu=ctx.scu)
            else:  # an SCU order: immediate matching on one model, pay-as-ask
                priced = [(t, n, t.ask_fen, t.ask_fen) for t, n in choose(tranches, **terms)]
            if not priced:
                refused: dict[str, Any] = {"status": "refused", "reason": "no_capacity"}
                blamed = refusal_field(tranches, **terms)
                if blamed is not None:
                    refused.update(reason="shape_unsatisfiable" if blamed != "quantity_scu" else "no_scu", field=blamed)
                return store(session, v, refused, ctx.clock())
            hold_id = new_id_str()
            total = sum(n for _t, n, _b, _s in priced)
            mirror = Order(
                id=new_id_str(),
                buyer_id=peer_row.participant_id,
                idempotency_key=f"fed:{v.peer.authority}:{v.message_id}",
                request_hash=message_hash(v.message),
                spec=order.model_dump(),
                billing_mode=order.billing_mode[:24],
                status="peer_held",
                quantity_devices=total,
                filled_devices=0,
                start_latest=order.start_at,
                created_at=now,
            )
            session.add(mirror)
            await session.flush()
            expires_at = now + ctx.settings.federation_hold_ttl_seconds
            session.add(
                FederationHold(
                    id=hold_id,
                    origin_authority=v.peer.authority,
                    message_id=v.message_id,
                    order_id=mirror.id,
                    status="held",
                    devices=total,
                    start_at=order.start_at,
                    end_at=order.end_at,
                    expires_at=expires_at,
                    created_at=now,
                )
            )
            await session.flush()
            lines = []
            for tranche, n, buyer_price, provider_price in priced:
                cid = new_id_str()
                body = contract_body_for(
                    contract_id=cid,
                    owner=ctx.authority,
                    buyer=v.peer.authority,
                    hold_id=hold_id,
                    order=order,
                    owner_order_id=mirror.id,
                    tranche=tranche,
                    devices=n,
                    fee_bps=ctx.settings.fee_bps,
                    created_at=now,
                    buyer_price_fen=buyer_price,
                    provider_price_fen=provider_price,
                )
                session.add(
                    FederationHoldLine(
                        contract_id=cid,
                        hold_id=hold_id,
                        pool_id=tranche.pool_id,
                        offer_id=tranche.offer_id,
                        devices=n,
                        start_at=order.start_at,
                        end_at=order.end_at,
                        price_fen=buyer_price,
                        body=body,
                    )
                )
                lines.append({"contract_id": cid, "devices": n, "body": body})
            response = {
                "status": "held",
                "hold_id": hold_id,
                "devices": total,
                "expires_at": expires_at,
                "lines": lines,
            }
            store(session, v, response, ctx.clock())
        ctx.publish_wanted.set()
        return response

    async def receive_commit(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Owner side of hold_commit: check the buyer exchange signed exactly the held contracts, countersign,
        write the contracts and append them to this log, in one transaction; refused if the hold expired."""
        expired: list[tuple[str, int]] = []
        try:
            return await self._receive_commit(v, expired)
        finally:
            for hold_id, devices in expired:  # found expired by the commit itself, before the sweeper
                await self.events.record("hold_expired", v.peer.authority, {"hold_id": hold_id, "devices": devices})

    async def _receive_commit(self, v: VerifiedPeerMessage, expired: list[tuple[str, int]]) -> dict[str, Any]:
        ctx = self.ctx
        body = parse_body(CommitBody, v.body)
        now = ctx.clock()
        me = ctx.me
        async with ctx.sessions.begin() as session:
            await lock_capacity(session)
            stored = await replay(session, v)
            if stored is not None:
                return stored
            hold = await session.get(FederationHold, body.hold_id)
            if hold is None or hold.origin_authority != v.peer.authority:
                raise UnknownHoldError(f"no hold {body.hold_id} for {v.peer.authority}", field="hold_id")
            if hold.status == "held" and hold.expires_at <= now:
                await self._expire_hold(session, hold, now)
                expired.append((hold.id, hold.devices))
            if hold.status != "held":
                refused = {"status": "refused", "reason": f"hold_{hold.status}", "hold_id": hold.id}
                return store(session, v, refused, ctx.clock())
            lines = (
                await session.scalars(
                    select(FederationHoldLine)
                    .where(FederationHoldLine.hold_id == hold.id)
                    .order_by(FederationHoldLine.contract_id)
                )
            ).all()
            signed: dict[str, dict[str, Any]] = {}
            for i, env in enumerate(body.contracts):
                try:
                    payload = verify_contract(env, v.peer, me.identity, require_both=False)
                except AuthenticationError as exc:
                    raise ValidationError(f"contracts[{i}]: {exc.message}", field=f"body.contracts[{i}]") from None
                signed[str(payload.get("contract_id"))] = env
            peer_row = await session.get(Peer, v.peer.authority)
            assert peer_row is not None and peer_row.participant_id is not None
            out = []
            for line in lines:
                env = signed.get(line.contract_id)
                if env is None or envelope_json(env) != line.body:
                    raise ValidationError(
                        f"contract {line.contract_id} is missing or differs from the held one", field="body.contracts"
                    )
                b = line.body
                contract = Contract(
                    id=line.contract_id,
                    round_id=None,
                    order_id=hold.order_id,
                    pool_id=line.pool_id,
                    offer_id=line.offer_id,
                    buyer_id=peer_row.participant_id,
                    provider_id=b["provider_id"],
                    model=b["model"],
                    region=b["region"],
                    devices=line.devices,
                    start_at=line.start_at,
                    end_at=line.end_at,
                    buyer_price_fen=int(b["buyer_price_fen"]),
                    provider_price_fen=int(b["provider_price_fen"]),
                    fee_bps=int(b["fee_bps"]),
                    billing_mode=str(b["billing_mode"]),
                    billing_terms=dict(b.get("billing_terms") or {}),
                    status="pending",
                    created_at=now,
                )
                session.add(contract)
                await session.flush()
                appended = await ctx.ledger.append_signed(session, "contract", line.contract_id, env)
                contract.log_index = appended.index
                session.add(peer_contract("owner", v.peer.authority, hold.order_id, b, appended, now))
                out.append(
                    {"contract_id": line.contract_id, "log_index": appended.index, "envelope": appended.envelope}
                )
            hold.status = "committed"
            hold.updated_at = now
            await session.execute(
                update(Order)
                .where(Order.id == hold.order_id)
                .values(status="filled", filled_devices=hold.devices, updated_at=now)
            )
            response = {"status": "committed", "hold_id": hold.id, "contracts": out}
            store(session, v, response, ctx.clock())
        ctx.publish_wanted.set()
        return response

    async def receive_release(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Owner side of hold_release: give the held capacity back (a committed hold stays committed)."""
        ctx = self.ctx
        body = parse_body(HoldRef, v.body)
        now = ctx.clock()
        async with ctx.sessions.begin() as session:
            await lock_capacity(session)
            stored = await replay(session, v)
            if stored is not None:
                return stored
            hold = await session.get(FederationHold, body.hold_id)
            if hold is None or hold.origin_authority != v.peer.authority:
                raise UnknownHoldError(f"no hold {body.hold_id} for {v.peer.authority}", field="hold_id")
            if hold.status == "held":
                hold.status = "released"
                hold.updated_at = now
                await session.execute(
                    update(Order).where(Order.id == hold.order_id).values(status="cancelled", updated_at=now)
                )
            response = {"status": hold.status, "hold_id": hold.id}
            store(session, v, response, ctx.clock())
        ctx.publish_wanted.set()
        return response

    async def _expire_hold(self, session: AsyncSession, hold: FederationHold, now: int) -> None:
        hold.status = "expired"
        hold.updated_at = now
        await session.execute(update(Order).where(Order.id == hold.order_id).values(status="expired", updated_at=now))

    async def expire_holds(self) -> list[str]:
        """Sweeper: holds past their expiry become `expired` (their capacity was already free to others)."""
        now = self.ctx.clock()
        async with self.ctx.sessions.begin() as session:
            holds = (
                await session.scalars(
                    select(FederationHold).where(FederationHold.status == "held", FederationHold.expires_at <= now)
                )
            ).all()
            for hold in holds:
                await self._expire_hold(session, hold, now)
            expired = [(h.id, h.origin_authority, h.devices) for h in holds]
        for hold_id, peer, devices in expired:
            await self.events.record("hold_expired", peer, {"hold_id": hold_id, "devices": devices})
        if expired:
            self.ctx.publish_wanted.set()
        return [h for h, _p, _d in expired]

    async def holds_view(self, status: str | None = None, *, peer: str | None = None) -> list[dict[str, Any]]:
        """Owner-side holds (newest first), optionally only those granted to `peer`."""
        async with self.ctx.sessions() as session:
            stmt = select(FederationHold).order_by(FederationHold.created_at.desc(), FederationHold.id.desc())
            if status:
                stmt = stmt.where(FederationHold.status == status)
            if peer:
                stmt = stmt.where(FederationHold.origin_authority == peer)
            rows = (await session.scalars(stmt.limit(500))).all()
        return [
            {
                "hold_id": h.id,
                "peer": h.origin_authority,
                "status": h.status,
                "devices": h.devices,
                "expires_at": h.expires_at,
                "order_id": h.order_id,
            }
            for h in rows
        ]
