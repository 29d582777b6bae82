"""The buyer's side of a cross-exchange trade: forward an order the local market cannot fill to peers whose
signed capacity summaries could fill it, collect their holds, then commit them all or release them all.

No peer call happens inside a database transaction: the order is read, the outbound row written and
committed, and only then is the peer asked (exchange.services.federation.commits does the second phase).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.services.federation.commits import Commits, HeldAtPeer
from exchange.services.federation.context import OPEN_ORDER, FederationContext
from exchange.services.federation.events import EventLog
from exchange.services.federation.peers import PeerDirectory
from exchange.services.federation.quantity import Need
from exchange.services.federation.summaries import Summaries
from exchange.services.federation.terms import check_line, check_shape, order_terms, shape_fields
from exchange.services.federation.wire import routes_from_json
from exchange.services.federation_capacity import IN_FLIGHT_STATUSES, Tranche, choose, free_tranches, lock_capacity
from exchange.services.peer_client import PeerRefusedError, PeerUnavailableError
from exchange.storage.federation import OutboundHold
from exchange.storage.orders import Order
from federation.peering import PeerIdentity
from identifiers.errors import HetexError, NotFoundError, ValidationError

LATENCY_SAMPLES = 10_000
MAX_REROUTES = 4  # regional hubs re-routing one order in a pass (a hub under a hub under a hub...)
FORWARD_CONCURRENCY = 4


SKIPS_REMEMBERED = 10_000


class BuyerSide:
    """Forwards open local orders to peers (first phase: holds), then hands the holds to Commits."""

    def __init__(
        self,
        ctx: FederationContext,
        peers: PeerDirectory,
        summaries: Summaries,
        commits: Commits,
        events: EventLog,
    ) -> None:
        self.ctx = ctx
        self.peers = peers
        self.summaries = summaries
        self.commits = commits
        self.events = events
        self.forward_latency_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.orders_forwarded = 0
        self.orders_committed = 0
        self._next_try: dict[str, float] = {}
        self._forward_lock = asyncio.Lock()
        #: (owner, order) pairs whose skip is already recorded: a hub routes the order there every round, and
        #: one event per pair says it (not one row per hub round)
        self._skips_noted: OrderedDict[tuple[str, str], None] = OrderedDict()

    def _first_skip(self, owner: str, order_id: str) -> bool:
        """True the first time (in this process, of the last SKIPS_REMEMBERED) a route of `order_id` to the
        flagged `owner` is skipped."""
        key = (owner, order_id)
        if key in self._skips_noted:
            return False
        self._skips_noted[key] = None
        if len(self._skips_noted) > SKIPS_REMEMBERED:
            self._skips_noted.popitem(last=False)
        return True

    async def _shortfall_in(
        self,
        session: AsyncSession,
        terms: Mapping[str, Any],
        start: int,
        end: int,
        need: int,
        cache: dict[tuple[int, int], list[Tranche]] | None = None,
    ) -> bool:
        """True when local free capacity cannot fill `need` devices of an order now. `cache` shares one
        capacity read per span across a pass over many orders (filters applied in memory)."""
        need_min = need if terms["all_or_nothing"] else 1
        heartbeat_timeout = self.ctx.settings.heartbeat_timeout_seconds
        if cache is None:
            tranches = await free_tranches(
                session,
                start=start,
                end=end,
                now=self.ctx.clock(),
                heartbeat_timeout=heartbeat_timeout,
                models=terms["models"],
                regions=terms["regions"],
            )
        else:
            if (start, end) not in cache:
                cache[(start, end)] = await free_tranches(
                    session, start=start, end=end, now=self.ctx.clock(), heartbeat_timeout=heartbeat_timeout
                )
            tranches = cache[(start, end)]
        picks = choose(
            tranches,
            devices_max=need,
            devices_min=need_min,
            limits=terms["limits"],
            models=terms["models"],
            regions=terms["regions"],
            billing_mode=terms["billing_mode"],
            duration=end - start,
        )
        return not picks

    async def forward_order(
        self,
        order_id: str,
        plan: Sequence[tuple[str, int, str, str]] | None = None,
        asks: Mapping[str, Iterable[int]] | None = None,
        start_at: int | None = None,
    ) -> dict[str, Any]:
        """Offer an open local order to peers whose summaries could fill it; commit the holds if they add up
        to what the order needs (all-or-nothing honoured across peers), else release them all. With a hub's
        `plan` ((owner, devices, model, region), ...: exchange.services.hub), exactly those owners are asked
        for exactly those devices of those classes, each all or nothing, and (`asks`, per owner) on the ladder
        steps the hub placed them on, so two orders routed to one class keep the hub's assignment, and from
        the start the hub placed it at (`start_at`: its slot on the hub's grid, not before the order's own
        earliest start)."""
        ctx = self.ctx
        t0 = time.perf_counter()
        now = ctx.clock()
        async with ctx.sessions() as session:
            order = await session.get(Order, order_id)
            if order is None:
                raise NotFoundError(f"no order {order_id}", field="order_id")
            in_flight = await session.scalar(
                select(func.count()).where(
                    OutboundHold.order_id == order_id, OutboundHold.status.in_(IN_FLIGHT_STATUSES)
                )
            )
            summaries = await self.summaries.fresh(session)
        terms = order_terms(order, ctx.scu)
        quantified = order.quantity_devices is not None or terms["quantity_scu"] is not None
        if order.status not in OPEN_ORDER or not quantified or in_flight:
            return {"status": "skipped"}
        need = Need.of(order, terms, ctx.scu)
        if need.remaining <= 0:
            return {"status": "skipped"}
        planned_scu: dict[str, Decimal] = {}
        if plan is not None and need.scu is not None:
            # an SCU order the hub placed as devices of one model at one or more owners: each owner is asked
            # for exactly its devices, and the plan must fill what is missing exactly (tracked in SCU)
            try:
                planned_scu = need.planned(plan)
            except ValidationError as exc:
                detail = {"order_id": order.id, "error": exc.message}
                await self.events.record("bad_route", ctx.settings.federation_hub or None, detail)
                return {"status": "bad_route", "error": exc.message}
        start = max(now, int(terms["start_earliest"] or now), start_at or 0)
        end = start + terms["duration"]
        candidates = []
        for peer, summary in summaries:
            if plan is None and summary.fillable(terms["models"], terms["regions"], terms["limits"]) > 0:
                best = summary.best_ask(terms["models"], terms["regions"])
                candidates.append((best if best is not None else 1 << 62, peer.authority, peer))
        candidates.sort(key=lambda c: (c[0], c[1]))
        planned: dict[str, tuple[int, list[str], list[str]]] = {}
        steps_of = {owner: set(a) for owner, a in (asks or {}).items()}
        known: dict[str, PeerIdentity] = {}
        reroutes = 0
        if plan is not None:
            # a hub does not know which owners we flagged `inconsistent`: their routes are skipped here (the
            # order is then short and released, or not offered at all), as is a reroute to one of them
            flagged = await self.peers.flagged()
            known = {p.authority: p for p in await self.peers.peers() if p.authority not in flagged}
            for owner in sorted({owner for owner, *_ in plan} & flagged):
                if self._first_skip(owner, order.id):
                    await self.events.record("skipped_flagged_owner", owner, {"order_id": order.id})
            for owner, n, model, region in plan:
                if owner not in known:
                    continue
                if owner not in planned:
                    candidates.append((0, owner, known[owner]))
                had, ms, rs = planned.get(owner, (0, [], []))
                planned[owner] = (had + n, sorted({*ms, model}), sorted({*rs, region}))
        if not candidates:
            return {"status": "no_peer"}
        # a shaped order (pool cap, one model, one site/region) is placed by one owner: each is asked for all
        # of it, and the first hold ends the search (shapes are not split across exchanges)
        shaped = shape_fields(terms)
        self.orders_forwarded += 1
        held: list[HeldAtPeer] = []
        total = Decimal(0)
        for _ask, _auth, peer in candidates:
            if total >= need.remaining:
                break
            want = need.remaining - total
            models, regions = terms["models"], terms["regions"]
            quantity = need.ask(want, models, all_of_it=bool(shaped))
            if peer.authority in planned:
                n, models, regions = planned[peer.authority]
                want, quantity = planned_scu.get(peer.authority, Decimal(n)), {"devices_max": n, "devices_min": n}
                steps = sorted(steps_of.get(peer.authority, ()))
                if steps:
                    quantity["asks"] = steps
            msg = ctx.client.build(
                peer,
                "order_offer",
                {
                    "order": {
                        "origin_order_id": order.id,
                        "buyer_id": order.buyer_id,
                        "models": models,
                        "regions": regions,
                        "limits": terms["limits"],
                        "billing_mode": terms["billing_mode"],
                        **quantity,
                        "start_at": start,
                        "end_at": end,
                        **shaped,
                    }
                },
            )
            async with ctx.sessions.begin() as session:
                if not held and not await self._claim(session, order):
                    return {"status": "skipped"}  # filled or forwarded meanwhile (local fill, another process)
                session.add(
                    OutboundHold(
                        id=msg["message_id"],
                        order_id=order.id,
                        peer_authority=peer.authority,
                        status="requested",
                        devices=0,
                        created_at=ctx.clock(),
                    )
                )
            try:
                resp = await ctx.client.send(peer, "/v1/federation/orders", msg)
            except (PeerUnavailableError, PeerRefusedError) as exc:
                await self.commits.set_outbound(msg["message_id"], status="failed", error=exc.message)
                await self.peers.mark(peer.authority, ok=False, error=exc.message)
                continue
            if resp.get("status") == "rerouted" and peer.authority in planned and reroutes < MAX_REROUTES:
                # the owner is a regional hub: it cleared its share again on its members' curves, and its
                # members are asked in its place (appended to the owners still to ask)
                reroutes += 1
                await self.commits.set_outbound(msg["message_id"], status="refused", error="rerouted")
                try:
                    added = self._rerouted(resp.get("routes"), peer.authority, planned, known, need, planned_scu)
                except ValidationError as exc:
                    await self.events.record("bad_route", peer.authority, {"order_id": order.id, "error": exc.message})
                    continue
                for owner, _n, _m, _r, owner_steps in added:
                    candidates.append((0, owner, known[owner]))
                    steps_of[owner] = set(owner_steps)
                continue
            if resp.get("status") != "held":
                why = str(resp.get("reason")) + (f" ({resp['field']})" if resp.get("field") else "")
                await self.commits.set_outbound(msg["message_id"], status="refused", error=why)
                continue
            try:
                lines = list(resp.get("lines") or [])
                for line in lines:
                    check_line(line, authority=ctx.authority, peer=peer, order=order, terms=terms, start=start, end=end)
                check_shape(lines, terms)
                devices = sum(int(line["devices"]) for line in lines)
                if devices != int(resp.get("devices", -1)):
                    raise ValidationError("the hold's devices differ from its lines", field="devices")
                amount = need.held(lines, want)
            except (ValidationError, KeyError, TypeError, ValueError) as exc:
                await self.commits.release(msg["message_id"], peer, str(resp.get("hold_id")))
                await self.events.record("bad_hold", peer.authority, {"order_id": order.id, "error": str(exc)})
                continue
            # kept in memory until commit: the row stays `requested` (a crash here leaves it to the reconciler,
            # and the owner's hold expires), which spares a write per hold
            held.append(
                HeldAtPeer(msg["message_id"], order.id, peer, str(resp["hold_id"]), lines, devices,
                           int(resp.get("expires_at", 0)))
            )  # fmt: skip
            total += amount
            if shaped and plan is None:  # a hub's plan already keeps the shape across its owners
                break
        if total < need.minimum:
            for h in held:
                await self.commits.release(h.outbound_id, h.peer, h.remote_hold_id)
            return {"status": "unfilled", "held": need.show(total), "needed": need.show(need.minimum)}
        if ctx.settings.federation_commit_delay_seconds > 0:  # fault injection: widen the hold-to-commit gap
            await asyncio.sleep(ctx.settings.federation_commit_delay_seconds)
        committed = 0
        for h in held:
            committed += await self.commits.commit_outbound(h.outbound_id, h)
        if committed:
            self.orders_committed += 1
            self.forward_latency_ms.append((time.perf_counter() - t0) * 1000.0)
        return {"status": "committed" if committed else "pending", "devices": committed, "holds": len(held)}

    def _rerouted(
        self,
        data: Any,
        hub: str,
        planned: dict[str, tuple[int, list[str], list[str]]],
        known: Mapping[str, PeerIdentity],
        need: Need,
        planned_scu: dict[str, Decimal],
    ) -> list[tuple[str, int, list[str], list[str], set[int]]]:
        """A regional hub's `rerouted` answer: its share of the plan split over its members (each a peer of
        ours, not asked yet in this pass, together exactly the devices planned at the hub). Updates `planned`
        (and `planned_scu` for an SCU order); the new owners with their devices, classes and ladder steps."""
        routes = routes_from_json(data, field="routes")
        n_hub = planned[hub][0]
        by_owner: dict[str, tuple[int, list[str], list[str], set[int]]] = {}
        for _oid, owner, n, model, region, steps, _ladder, _start in routes:
            if owner not in known or owner in planned or owner == self.ctx.authority:
                raise ValidationError(f"rerouted to {owner}: not a peer, or already asked", field="routes")
            had, ms, rs, st = by_owner.get(owner, (0, [], [], set()))
            by_owner[owner] = (had + n, sorted({*ms, model}), sorted({*rs, region}), st | set(steps))
        if sum(v[0] for v in by_owner.values()) != n_hub:
            raise ValidationError(f"rerouted devices differ from the {n_hub} planned", field="routes")
        if need.scu is not None:
            per = planned_scu.pop(hub) / n_hub
            if any(ms != by_owner[next(iter(by_owner))][1] for _n, ms, _r, _s in by_owner.values()):
                raise ValidationError("an SCU order is rerouted on one model", field="routes")
            planned_scu.update({o: per * v[0] for o, v in by_owner.items()})
        del planned[hub]
        for owner, (n, ms, rs, _st) in by_owner.items():
            planned[owner] = (n, ms, rs)
        return [(o, n, ms, rs, st) for o, (n, ms, rs, st) in sorted(by_owner.items())]

    async def _claim(self, session: AsyncSession, order: Order) -> bool:
        """In the caller's write transaction: the order is still as read (open, same fill, nothing in flight),
        so the outbound row written next makes this forwarder its only seller (local fill skips it)."""
        await lock_capacity(session)
        fresh = await session.get(Order, order.id, populate_existing=True)
        if fresh is None or fresh.status not in OPEN_ORDER or fresh.filled_devices != order.filled_devices:
            return False
        in_flight = await session.scalar(
            select(func.count()).where(OutboundHold.order_id == order.id, OutboundHold.status.in_(IN_FLIGHT_STATUSES))
        )
        return not in_flight

    async def forward_open_orders(self, order_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Hook for rounds (after a local round, pass the still-open order ids) and the background tick:
        forward orders the local market cannot fill now, or that stayed open longer than forward_after."""
        ctx = self.ctx
        async with self._forward_lock:
            now = ctx.clock()
            mono = time.monotonic()
            async with ctx.sessions() as session:
                summaries = [summary for _peer, summary in await self.summaries.fresh(session)]
                if not summaries:
                    return []  # nobody to forward to: this pass (run every tick) reads no order
                stmt = select(Order).where(Order.status.in_(OPEN_ORDER))
                if order_ids is not None:
                    stmt = stmt.where(Order.id.in_(list(order_ids)))
                orders = (await session.scalars(stmt.order_by(Order.created_at, Order.id).limit(200))).all()
            due = []
            spans: dict[tuple[int, int], list[Tranche]] = {}
            async with ctx.sessions() as shortfall_session:  # one read pass for the local-capacity checks
                for order in orders:
                    if self._next_try.get(order.id, 0.0) > mono:
                        continue
                    terms = order_terms(order, ctx.scu)
                    if not any(x.fillable(terms["models"], terms["regions"], terms["limits"]) > 0 for x in summaries):
                        continue  # no peer's summary could fill it: forward_order would find no peer
                    start = max(now, int(terms["start_earliest"] or now))
                    end = start + terms["duration"]
                    aged = now - order.created_at >= ctx.settings.federation_forward_after_seconds
                    if order_ids is None and not aged:
                        if order.quantity_devices is None:
                            continue  # an SCU order: the local rounds have it until forward_after
                        remaining = order.quantity_devices - order.filled_devices
                        if not await self._shortfall_in(shortfall_session, terms, start, end, remaining, spans):
                            continue
                    due.append(order.id)
            gate = asyncio.Semaphore(FORWARD_CONCURRENCY)

            async def one(order_id: str) -> dict[str, Any]:
                async with gate:
                    try:
                        outcome = await self.forward_order(order_id)
                    except HetexError as exc:
                        outcome = {"status": "error", "error": exc.message}
                if outcome["status"] != "committed":
                    self._next_try[order_id] = mono + max(1.0, ctx.settings.federation_forward_interval_seconds)
                else:
                    self._next_try.pop(order_id, None)
                return {"order_id": order_id, **outcome}

            return list(await asyncio.gather(*(one(oid) for oid in due)))
