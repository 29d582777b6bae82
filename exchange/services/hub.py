"""The hub role (specs/federation.md section 9): an exchange that clears cross-exchange demand for its
member exchanges on their supply curves, with the same matching engine, and routes holds to the owners.

Member side (settings `federation_hub` names the hub, a peer): every summary interval it sends the hub a
signed supply summary (federation.summary: per region x model, free devices by slot as ask ladders) and
the open device orders its own rounds left unfilled (`hub_demand`, the market-snapshot order form); it
stops greedy forwarding. When the hub answers with `hub_routes`, it runs the ordinary two-phase protocol
with exactly the owners, classes and ladder steps the hub named (forward_order with a plan). A coupled
member (`federation_hub_coupled`) sends every open order instead, clears the orders routed to its own
capacity in a restricted round, and reports each hub round done, so the hub clears the whole fabric in
rounds that see fresh curves (the handshake in `_all_reported`).

Hub side (setting `federation_hub_mode`): keeps the newest summary and demand of each member (soft state:
members resend every interval, so a restarted hub is whole again after one interval), clears them every
`federation_hub_round_interval_seconds` (matching.federated.clear_hub) and sends each buyer exchange its
routes. Regional hubs under a national one: a hub that itself names a `federation_hub` sends its parent
the aggregate of its members' curves (federation.summary.aggregate).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.services.federation import Federation
from exchange.services.federation.context import OPEN_ORDER
from exchange.services.federation.wire import ForwardedOrder, route_json, routes_from_json
from exchange.services.federation_capacity import IN_FLIGHT_STATUSES, free_tranches
from exchange.services.peer_client import PeerRefusedError, PeerUnavailableError
from exchange.services.rounds import Routed
from exchange.services.snapshot import OrderRow, latency_matrix, market_order
from exchange.settings import Settings
from exchange.storage.federation import OutboundHold, PeerContract
from exchange.storage.orders import Order as OrderRecord
from federation.note import NoteError, NoteVerifier, verify_checkpoint
from federation.peering import VerifiedPeerMessage, envelope_json, verify_contract
from federation.summary import (
    SlotSupply,
    SupplyClass,
    SupplySummary,
    aggregate,
    sign_supply_summary,
    verify_supply_summary,
)
from identifiers.catalogue import Catalogue
from identifiers.errors import HetexError, ValidationError
from identifiers.regions import RegionTable
from matching.errors import MarketError
from matching.federated import ModelFacts, Route, SupplyCurve, clear_hub
from matching.model import SNAPSHOT_FORMAT, Order, market_from_dict, market_to_dict

log = logging.getLogger("hetex.hub")
MAX_DEMAND = 2000
HORIZON_SLOTS = 8
# routed orders a member runs the two-phase protocol for at once: each is two requests to its owners, and
# an owner takes at most 32 connections from one address (exchange/api/connections.py; members on one
# machine all connect from 127.0.0.1, so 3 members x 8 stay under it with room for summaries and resync)
ROUTE_CONCURRENCY = 8
SUMMARY_SLOT_SECONDS = 3600
MAX_REPORTED = 500  # contracts per demand message (the rest follow with the next ones)


def curve_of(owner: str, c: SupplyClass, slot_seconds: int) -> SupplyCurve:
    """The matching view of one summary class."""
    facts = ModelFacts(c.family, c.memory_gb, c.scu, c.stack, c.domestic)
    slots = tuple((s.start, s.ladder) for s in c.slots)
    return SupplyCurve(owner, c.region, c.model, facts, c.max_pool_free, slot_seconds, slots)


def orders_to_json(orders: Sequence[Order]) -> list[dict[str, Any]]:
    """Orders in the market-snapshot JSON form (specs/market-snapshot.schema.json)."""
    from matching.model import Market

    return list(market_to_dict(Market(now=0, pools=(), orders=tuple(orders)))["orders"])


def orders_from_json(data: Any) -> list[Order]:
    """Orders from the market-snapshot JSON form (ValidationError naming the field)."""
    if not isinstance(data, list) or len(data) > MAX_DEMAND:
        raise ValidationError(f"orders must be a list of at most {MAX_DEMAND}", field="body.orders")
    try:
        market = market_from_dict({"format": SNAPSHOT_FORMAT, "now": 0, "pools": [], "orders": data})
    except MarketError as exc:
        raise ValidationError(exc.message, field=f"body.{exc.field or 'orders'}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValidationError(f"orders: {exc}", field="body.orders") from None
    return list(market.orders)


class HubService:
    """Both sides of the hub protocol: member (publish supply and demand, act on routes) and hub (clear)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        federation: Federation,
        catalogue: Catalogue,
        regions: RegionTable,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.federation = federation
        self.catalogue = catalogue
        self.regions = regions
        self.clock = federation.ctx.clock
        self.is_hub = settings.federation_hub_mode
        self.hub_authority = settings.federation_hub or None
        # hub side, soft state
        self.supply: dict[str, SupplySummary] = {}
        self.demand: dict[str, tuple[float, list[Order]]] = {}
        self.coupled: set[str] = set()  # members whose demand is all their open orders (local routes kept)
        self.done_round: dict[str, int] = {}  # coupled member -> last hub round whose routes it finished
        self._last_round_at = 0.0
        self._all_done_at: float | None = None
        self._awaiting: set[str] = set()  # coupled members the last round's routes were sent to
        self._demand_ids: dict[str, tuple[str, ...]] = {}  # member -> the order ids it sent last
        self._changed_at = 0.0  # when a member's demand last differed from what it sent before
        self._fired_by = ""
        self.rounds = 0
        self.last_round: dict[str, Any] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=20)  # the last rounds, for GET /v1/federation/hub
        # member side
        self._version = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counts: Counter[str] = Counter()
        self.route_latency_ms: deque[float] = deque(maxlen=2000)
        #: Hook (exchange/composition.py): a clearing round on exactly the given own orders, each on the
        #: models and regions the hub routed here (RoundService.run_round(..., routed=...)).
        self.local_round: Callable[[Mapping[str, Routed]], Awaitable[Any]] | None = None
        self._confirming: set[str] = set()  # own orders routed here or to owners, not yet done
        self._done_round = 0  # the last hub round whose routes we finished (holds, commits, local round)
        self._latest_routes = 0  # the round of the newest routes received (a restarted hub counts from 1)
        self._publish_now = asyncio.Event()
        self._reported: set[str] = set()  # our contract ids the hub has (sent in a demand message)
        self._reported_since = 0  # creation time of the newest contract sent: older ones are all sent

    # -------------------------------------------------------------------------------------- inbound

    async def handle(self, kind: str, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> Any:
        """Verify and dispatch one hub message (the entry point of the /v1/federation/hub/* routes)."""
        v = await self.federation.gate.verify_inbound(method, url, headers, body, kind)
        self.counts[f"received_{kind}"] += 1
        if kind == "supply_summary":
            return self.receive_supply(v)
        if kind == "hub_demand":
            out = self.receive_demand(v)
            return {**out, **await self.record_fabric(v)}
        if kind == "hub_routes":
            return self.receive_routes(v)
        raise ValidationError(f"unknown message kind {kind}", field="type")

    def _need_hub(self) -> None:
        if not self.is_hub:
            raise ValidationError("this exchange is not a hub", field="type")

    def receive_supply(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Hub side: keep a member's newest verified supply summary."""
        self._need_hub()
        s = verify_supply_summary(v.body.get("summary"), v.peer.authority, v.peer.keyring(), now=self.clock())
        old = self.supply.get(v.peer.authority)
        if old is not None and s.version <= old.version:
            return {"status": "stale", "version": old.version}
        self.supply[v.peer.authority] = s
        return {"status": "accepted", "version": s.version}

    def receive_demand(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Hub side: a member's current unmet demand replaces what it sent before (`coupled`: all its open
        orders, and routes back to its own capacity are sent to it too)."""
        self._need_hub()
        orders = orders_from_json(v.body.get("orders"))
        coupled = v.body.get("coupled", False)
        if not isinstance(coupled, bool):
            raise ValidationError("coupled must be true or false", field="body.coupled")
        done = v.body.get("round", 0)
        if not isinstance(done, int) or isinstance(done, bool) or done < 0:
            raise ValidationError("round must be an integer >= 0", field="body.round")
        now = time.time()
        # when the member read these orders, in microseconds (a coupled member says; integers: canonical JSON)
        as_of_us = v.body.get("as_of_us", int(now * 1e6))
        if not isinstance(as_of_us, int) or isinstance(as_of_us, bool) or as_of_us < 0:
            raise ValidationError("as_of_us must be a time in microseconds", field="body.as_of_us")
        as_of = as_of_us / 1e6
        ids = tuple(sorted(o.id for o in orders))
        if self._demand_ids.get(v.peer.authority) != ids:
            self._demand_ids[v.peer.authority] = ids
            self._changed_at = now
        self.demand[v.peer.authority] = (min(float(as_of), now), orders)  # a member cannot claim the future
        (self.coupled.add if coupled else self.coupled.discard)(v.peer.authority)
        self.done_round[v.peer.authority] = done
        return {"status": "accepted", "orders": len(orders)}

    def receive_routes(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Member side: the hub's routes for our orders; each order goes to its owners in the background."""
        if v.peer.authority != self.hub_authority:
            raise ValidationError(f"{v.peer.authority} is not this exchange's hub", field="from_authority")
        number = v.body.get("round", 0)
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise ValidationError("round must be an integer >= 0", field="body.round")
        self._latest_routes = number
        plans: dict[str, list[tuple[str, int, str, str]]] = {}
        asks: dict[str, dict[str, set[int]]] = {}
        me = self.federation.ctx.authority
        # per own order: devices per (region, model, ask) on our own ladder (None: a route without steps)
        own_steps: dict[str, dict[tuple[str, str, int], int] | None] = {}
        starts: dict[str, int] = {}  # per order: the start the hub placed it at
        for order_id, owner, n, model, region, steps, ladder, start in routes_from_json(v.body.get("routes")):
            plans.setdefault(order_id, []).append((owner, n, model, region))
            if start is not None:
                starts[order_id] = min(start, starts.get(order_id, start))
            asks.setdefault(order_id, {}).setdefault(owner, set()).update(steps)
            if owner == me:
                acc = own_steps.setdefault(order_id, {})
                if ladder is None or acc is None:
                    own_steps[order_id] = None
                else:
                    for ask, k in ladder:
                        acc[(region, model, ask)] = acc.get((region, model, ask), 0) + k
        t0 = time.perf_counter()
        local: dict[str, Routed] = {}
        remote: dict[str, list[tuple[str, int, str, str]]] = {}
        for order_id, plan in plans.items():
            if any(owner == me for owner, *_ in plan):
                # routed (at least partly) to our own capacity: our round clears it on the routed classes and
                # ladder steps (an order split between us and others is tried here whole, on the routed
                # classes without step limits; it goes back to the hub if not)
                whole = all(o == me for o, *_ in plan)
                self.counts["routed_local" if whole else "routed_mixed"] += 1
                mine = own_steps.get(order_id)
                local[order_id] = Routed(
                    tuple(sorted({m for *_, m, _r in plan})),
                    tuple(sorted({r for *_, r in plan})),
                    tuple(sorted(mine.items())) if whole and mine is not None else None,
                )
            else:
                remote[order_id] = plan
        self._confirming |= set(plans)
        self._spawn(self._act(number, local, remote, asks, starts, t0))
        return {"status": "accepted", "orders": len(plans)}

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _act(
        self,
        number: int,
        local: Mapping[str, Routed],
        remote: Mapping[str, list[tuple[str, int, str, str]]],
        asks: Mapping[str, Mapping[str, set[int]]],
        starts: Mapping[str, int],
        t0: float,
    ) -> None:
        """Run one round's routes: the two-phase protocol with each remote order's owners, and one local
        round on the orders routed to us; then tell the hub (next demand message) this round is done."""
        gate = asyncio.Semaphore(ROUTE_CONCURRENCY)

        async def forward(order_id: str, plan: list[tuple[str, int, str, str]]) -> None:
            async with gate:
                await self._forward(order_id, plan, t0, asks.get(order_id, {}), starts.get(order_id))

        try:
            work = [forward(order_id, plan) for order_id, plan in remote.items()]
            if local and self.local_round is not None:
                work.append(self._confirm_local(local, t0))
            await asyncio.gather(*work)
        finally:
            self._confirming -= {*local, *remote}
            if number == self._latest_routes:  # an older round finishing late says nothing new
                self._done_round = number
            self._publish_now.set()  # the hub waits for this round's report before its next round

    async def _confirm_local(self, routed: Mapping[str, Routed], t0: float) -> None:
        """Clear the orders the hub routed to our own capacity in one round (same engine, prices, commit)."""
        assert self.local_round is not None
        try:
            await self.local_round(routed)
            self.counts["local_rounds"] += 1
            self.route_latency_ms.append((time.perf_counter() - t0) * 1000.0)
        except HetexError as exc:
            self.counts["local_round_refused"] += 1
            log.info("hub local round: %s", exc.message)

    async def _forward(
        self,
        order_id: str,
        plan: list[tuple[str, int, str, str]],
        t0: float,
        asks: Mapping[str, set[int]] | None = None,
        start_at: int | None = None,
    ) -> None:
        try:
            outcome = await self.federation.outbound.forward_order(order_id, plan, asks, start_at)
        except HetexError as exc:
            outcome = {"status": "error", "error": exc.message}
        self.counts[f"routed_{outcome.get('status')}"] += 1
        if outcome.get("status") == "committed":
            self.route_latency_ms.append((time.perf_counter() - t0) * 1000.0)

    # -------------------------------------------------------------------------------------- member side

    async def build_supply(self) -> SupplySummary:
        """Our free capacity per (region, model) and slot over the next slots, as ask ladders."""
        now = self.clock()
        slot = max(self.settings.round_slot_seconds, SUMMARY_SLOT_SECONDS)  # hour slots: leases fit the horizon
        slot0 = now - now % slot
        acc: dict[tuple[str, str], dict[int, dict[int, int]]] = {}
        biggest: dict[tuple[str, str], int] = {}
        async with self.sessions() as session:
            for k in range(HORIZON_SLOTS):
                start = slot0 + k * slot
                tranches = await free_tranches(
                    session,
                    start=max(start, now),
                    end=start + slot,
                    now=now,
                    heartbeat_timeout=self.settings.heartbeat_timeout_seconds,
                )
                per_pool: dict[tuple[str, str, str], int] = {}
                for t in tranches:
                    if t.model not in self.catalogue:
                        continue
                    key = (t.region, t.model)
                    lad = acc.setdefault(key, {}).setdefault(start, {})
                    lad[t.ask_fen] = lad.get(t.ask_fen, 0) + t.devices
                    pk = (t.region, t.model, t.pool_id)
                    per_pool[pk] = per_pool.get(pk, 0) + t.devices
                for (region, model, _p), n in per_pool.items():
                    biggest[(region, model)] = max(biggest.get((region, model), 0), n)
        classes = []
        for (region, model), by_slot in sorted(acc.items()):
            m = self.catalogue.get(model)
            slots = tuple(SlotSupply(t, tuple(sorted(lad.items()))) for t, lad in sorted(by_slot.items()))
            memory = m.memory_gb
            classes.append(
                SupplyClass(
                    region,
                    model,
                    m.family,
                    int(memory) if memory is not None else 0,
                    m.scu,
                    m.software_stack or "",
                    m.domestic,
                    biggest[(region, model)],
                    slots,
                )
            )
        self._version = max(self._version + 1, time.time_ns() // 1_000_000)
        ttl = self.settings.federation_summary_ttl_seconds
        return SupplySummary(self.federation.ctx.authority, self._version, now, now + ttl, slot, tuple(classes))

    async def unmet_demand(self) -> list[Order]:
        """Open device orders older than `federation_forward_after_seconds` (coupled: every open device
        order, our own rounds clear only what the hub routes back) and not in flight at a peer."""
        now = self.clock()
        after = 0.0 if self.settings.federation_hub_coupled else self.settings.federation_forward_after_seconds
        async with self.sessions() as session:
            busy = select(OutboundHold.order_id).where(OutboundHold.status.in_(IN_FLIGHT_STATUSES))
            rows = (
                await session.scalars(
                    select(OrderRecord)
                    .where(
                        OrderRecord.status.in_(OPEN_ORDER),
                        OrderRecord.created_at <= now - after,
                        OrderRecord.id.not_in(busy),
                    )
                    .order_by(OrderRecord.created_at, OrderRecord.id)
                    .limit(MAX_DEMAND)
                )
            ).all()
        out = []
        for seq, r in enumerate(x for x in rows if x.id not in self._confirming):
            row = OrderRow(r.id, r.buyer_id, r.status, r.spec, r.quantity_devices, r.filled_devices, r.updated_at,
                           r.created_at, r.spec.get("home_region"), filled_scu=r.filled_scu)  # fmt: skip
            made = market_order(row, seq, self.catalogue, slot_seconds=self.settings.round_slot_seconds)
            if isinstance(made, Order):
                out.append(replace(made, buyer=""))  # the hub needs no buyer identity
        return out

    async def publish(self) -> dict[str, Any]:
        """Send the hub our supply summary (a hub: the aggregate of its members') and our unmet demand."""
        if self.hub_authority is None:
            return {"status": "no_hub"}
        done = self._done_round  # read before the summary is built: it reflects that round's holds
        as_of = time.time()  # and before the orders are read
        hub = await self.federation.peers.peer(self.hub_authority)
        me = self.federation.ctx.me
        if self.is_hub:
            now = self.clock()
            fresh = [s for s in self.supply.values() if s.expires_at > now]
            self._version = max(self._version + 1, time.time_ns() // 1_000_000)
            ttl = self.settings.federation_summary_ttl_seconds
            summary = aggregate(me.authority, fresh, version=self._version, issued_at=now, expires_at=now + ttl)
        else:
            summary = await self.build_supply()
        client = self.federation.ctx.client
        env = sign_supply_summary(summary, me.key_id, me.key)
        await client.send(hub, "/v1/federation/hub/summaries", client.build(hub, "supply_summary", {"summary": env}))
        demand = await self.unmet_demand()
        body: dict[str, Any] = {"orders": orders_to_json(demand)}
        if self.settings.federation_hub_coupled and not self.is_hub:
            body.update(coupled=True, round=done, as_of_us=int(as_of * 1e6))
        reported = await self._unreported_contracts()
        if reported:  # the regulator's fabric view at the hub: our new contracts, and our log covering them
            checkpoint = await self.federation.ctx.ledger.checkpoint()
            body.update(contracts=[env for _cid, env, _at in reported], checkpoint=checkpoint.note)
        await client.send(hub, "/v1/federation/hub/demand", client.build(hub, "hub_demand", body))
        if reported:  # the next reads start at the newest sent (ids kept to skip ties at that second)
            self._reported_since = reported[-1][2]
            self._reported.update(cid for cid, _env, _at in reported)
        self.counts["published"] += 1
        return {
            "status": "sent",
            "classes": len(summary.classes),
            "orders": len(demand),
            "reported_contracts": len(reported),
        }

    async def _unreported_contracts(self) -> list[tuple[str, dict[str, Any], int]]:
        """Our cross-exchange contracts as buyer (each reported once, by its buyer's exchange) not yet sent
        to the hub in this process (after a restart all are sent again; the hub keeps each once)."""
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(PeerContract.contract_id, PeerContract.envelope, PeerContract.created_at)
                    .where(PeerContract.side == "buyer", PeerContract.created_at >= self._reported_since)
                    .order_by(PeerContract.created_at, PeerContract.contract_id)
                )
            ).all()
        return [(str(cid), dict(env), int(at)) for cid, env, at in rows if cid not in self._reported][:MAX_REPORTED]

    async def record_fabric(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Hub side: append a member's reported cross-exchange contracts (each verified to carry both its
        exchanges' signatures, the reporting member being one of them; countersigned, kept once) and its
        signed checkpoint (verified with its key) to our log, so our audit export covers the fabric."""
        contracts = v.body.get("contracts", [])
        note = v.body.get("checkpoint")
        if not isinstance(contracts, list) or len(contracts) > MAX_REPORTED:
            raise ValidationError(f"contracts must be a list of at most {MAX_REPORTED}", field="body.contracts")
        if not contracts:
            return {}
        if not isinstance(note, str):
            raise ValidationError(
                "reported contracts come with the member's signed checkpoint", field="body.checkpoint"
            )
        try:
            cp = verify_checkpoint(note, [NoteVerifier(v.peer.origin, v.peer.public_key)], origin=v.peer.origin)
        except NoteError as exc:
            raise ValidationError(f"checkpoint refused: {exc.message}", field="body.checkpoint") from None
        peers = {p.authority: p for p in await self.federation.peers.peers()}
        checked: list[tuple[str, dict[str, Any]]] = []
        for i, env in enumerate(contracts):
            where = f"body.contracts[{i}]"
            try:
                body = envelope_json(env)
                owner, buyer = peers.get(str(body.get("owner_authority"))), peers.get(str(body.get("buyer_authority")))
                if owner is None or buyer is None or v.peer.authority not in (owner.authority, buyer.authority):
                    raise ValidationError("a contract between two of our peers, the sender one of them", field=where)
                body = verify_contract(env, owner, buyer)
            except (HetexError, TypeError, ValueError, AttributeError) as exc:
                message = exc.message if isinstance(exc, HetexError) else str(exc)
                raise ValidationError(f"contract refused: {message}", field=where) from None
            if body.get("kind") != "cross_exchange" or not isinstance(body.get("contract_id"), str):
                raise ValidationError("a cross-exchange contract record", field=where)
            checked.append((body["contract_id"], env))
        ledger = self.federation.ctx.ledger
        added = 0
        async with self.sessions.begin() as session:
            for cid, env in checked:
                if await ledger.entries_for(cid, session):
                    continue  # reported before (a member restarted, or both sides reported it)
                await ledger.append_signed(session, "contract", cid, env)
                added += 1
            if added:
                record = {
                    "type": "peer_checkpoint",
                    "peer_authority": v.peer.authority,
                    "origin": cp.origin,
                    "size": cp.size,
                    "root": base64.b64encode(cp.root).decode(),
                    "note": note,
                    "created_at": self.clock(),
                }
                await ledger.append(session, "peer-checkpoint", f"{v.peer.authority}:{cp.size}", record)
        self.counts["fabric_contracts"] += added
        return {"recorded_contracts": added}

    # -------------------------------------------------------------------------------------- hub side

    async def hub_round(self) -> dict[str, Any]:
        """Clear members' demand on members' curves; send each buyer exchange its routes."""
        now = self.clock()
        fresh = await self._fresh_supply(now)
        mono = time.monotonic()
        wall = time.time()
        ttl = self.settings.federation_summary_ttl_seconds
        demand = {m: os_ for m, (t, os_) in self.demand.items() if t > wall - ttl}
        self._fired_by = "interval"
        if self.coupled & set(fresh) and not self._all_reported(fresh, wall):
            return {"status": "waiting", "members": len(fresh), "reported": len(demand)}
        self.demand.clear()  # members resend every interval; an order is routed once per its sending
        self._last_round_at = wall
        self._all_done_at = None
        if not fresh or not any(demand.values()):
            return {"status": "idle", "members": len(fresh), "orders": sum(len(v) for v in demand.values())}
        slot = Counter(s.slot_seconds for s in fresh.values()).most_common(1)[0][0]
        curves = [curve_of(m, c, slot) for m, s in fresh.items() if s.slot_seconds == slot for c in s.classes]
        orders: list[Order] = []
        buyer: dict[str, str] = {}
        for m, os_ in sorted(demand.items()):
            for o in os_:
                oid = f"{m}/{o.id}"
                orders.append(replace(o, id=oid, seq=len(orders)))
                buyer[oid] = m
        used = {c.region for c in curves} | {r for o in orders for r in o.regions}
        used |= {o.home_region for o in orders if o.home_region}
        lat = latency_matrix(self.regions, used)
        t0 = time.perf_counter()
        routes, result = await asyncio.to_thread(
            clear_hub,
            curves,
            orders,
            buyer,
            now,
            latency_ms=lat,
            slot_seconds=slot,
            max_start_slots=self.settings.round_max_start_slots,
        )
        solve_ms = (time.perf_counter() - t0) * 1000.0
        self.rounds += 1
        # the owner of a route is the member whose summary we cleared; a route back to the buyer's own
        # exchange is dropped (its own rounds already saw that capacity) unless the member is coupled (its
        # rounds clear only what we route to it)
        by_buyer: dict[str, list[Route]] = {m: [] for m in self.coupled & set(fresh)}  # coupled: every round
        for r in routes:
            if r.owner != r.buyer_exchange or r.buyer_exchange in self.coupled:
                by_buyer.setdefault(r.buyer_exchange, []).append(r)
        sent = await self._send_routes(by_buyer)
        self._awaiting = {m for m, how in sent.items() if how == "sent" and m in self.coupled}
        self.last_round = {
            "round": self.rounds,
            "monotonic": round(mono, 3),
            "at": now,
            "members": sorted(fresh),
            "orders": len(orders),
            "routes": sum(len(v) for v in by_buyer.values()),
            "welfare_fen": result.stats.welfare_fen,
            "solve_ms": round(solve_ms, 1),
            "sent": sent,
            "fired_by": self._fired_by,
        }
        self.history.append(dict(self.last_round))
        return {"status": "cleared", **self.last_round}

    async def reroute(self, order: ForwardedOrder, buyer: str) -> list[dict[str, Any]] | None:
        """A regional hub named as owner by its parent's routes (the parent cleared on our aggregate): clear
        the offered order again on our members' fresh curves (only the ladder steps the parent placed it on)
        and answer routes naming the members, for the buyer's exchange to ask them (specs/federation.md
        9.3). None when we are no hub or have no member curves (the order is then an ordinary offer)."""
        if not self.is_hub:
            return None
        now = self.clock()
        fresh = {m: s for m, s in (await self._fresh_supply(now)).items() if m != buyer}
        if not fresh:
            return None
        slot = Counter(s.slot_seconds for s in fresh.values()).most_common(1)[0][0]
        steps = set(order.asks or ())
        curves = []
        for m, s in sorted(fresh.items()):
            for c in s.classes:
                if s.slot_seconds != slot or (order.models and c.model not in order.models):
                    continue
                if order.regions and c.region not in order.regions:
                    continue
                curve = curve_of(m, c, slot)
                if steps:
                    kept = tuple((t, tuple((a, n) for a, n in lad if a in steps)) for t, lad in curve.slots)
                    curve = replace(curve, slots=kept)
                curves.append(curve)
        limits = {}
        for m in sorted({c.model for c in curves}):
            lim = order.limits.get(m, order.limits.get("*"))
            if lim is not None:
                limits[m] = lim
        oid = f"{buyer}/{order.origin_order_id}"
        demand = Order(
            id=oid,
            buyer="",
            seq=0,
            quantity_devices=order.devices_max,
            models=tuple(sorted(limits)),
            regions=tuple(order.regions or ()),
            all_or_nothing=order.devices_min >= order.devices_max,
            min_fill_devices=order.devices_min,
            max_pools=order.max_pools or 1000,
            same_model=order.same_model,
            colocation=order.colocation,
            duration_seconds=order.end_at - order.start_at,
            start_earliest=order.start_at,  # the window the offer asks for (the slot its parent placed it in)
            start_latest=order.start_at,
            limits=limits,
            billing_mode=order.billing_mode,
        )
        if not limits:
            return []
        lat = latency_matrix(self.regions, {c.region for c in curves})
        routes, _result = await asyncio.to_thread(
            clear_hub, curves, [demand], {oid: buyer}, now, latency_ms=lat, slot_seconds=slot, max_start_slots=1
        )
        self.counts["rerouted_down"] += 1
        return [
            route_json(
                order.origin_order_id, r.owner, r.devices, r.model, r.region, r.start, r.end, r.buyer_price_fen, r.steps
            )
            for r in routes
        ]

    async def _fresh_supply(self, now: int) -> dict[str, SupplySummary]:
        """Members' unexpired summaries, except those of members whose log we flagged `inconsistent` (their
        summaries are no longer used, specs/federation.md 5, until the operator's reverify restores them)."""
        fresh = {m: s for m, s in self.supply.items() if s.expires_at > now}
        if not fresh:
            return fresh
        flagged = await self.federation.peers.flagged()
        return {m: s for m, s in fresh.items() if m not in flagged}

    def _all_reported(self, fresh: Mapping[str, SupplySummary], wall: float) -> bool:
        """A coupled fabric clears once (1) every coupled member with a fresh summary said it finished the
        last round's routes (its holds at the owners granted or refused, its local round done), and (2)
        every member sent a summary and demand after that moment, so no curve still counts capacity the
        last round already placed. Times are when members read their orders (`as_of`), on the wall clock.
        A member silent for a summary TTL is not waited for (its summary is no longer fresh); one that keeps
        publishing but never finishes its routes is waited for at most 4 summary TTLs."""
        if wall - self._last_round_at > 4 * self.settings.federation_summary_ttl_seconds:
            self._fired_by = "timeout"
            return any(t > self._last_round_at for t, _o in self.demand.values())
        members = set(fresh)
        if any(self.done_round.get(m, -1) != self.rounds for m in members & self._awaiting):
            return False
        if self._all_done_at is None:
            self._all_done_at = wall
        if not all(m in self.demand and self.demand[m][0] > self._all_done_at for m in members):
            return False
        # (3) a call period: orders arriving at several members within a moment are cleared together, so
        # the round waits until every member sent the same demand once more (at most 3 publish intervals)
        self._fired_by = "settled"
        if all(self.demand[m][0] > self._changed_at for m in members):
            return True
        self._fired_by = "batch_limit"
        return wall - self._all_done_at > 3 * max(1.0, self.settings.federation_summary_interval_seconds)

    async def _send_routes(self, by_buyer: Mapping[str, list[Route]]) -> dict[str, str]:
        client = self.federation.ctx.client

        async def one(member: str, rs: list[Route]) -> tuple[str, str]:
            peer = await self.federation.peers.peer(member)
            prefix = f"{member}/"
            body = {
                "round": self.rounds,
                "routes": [
                    route_json(
                        r.order_id.removeprefix(prefix),
                        r.owner,
                        r.devices,
                        r.model,
                        r.region,
                        r.start,
                        r.end,
                        r.buyer_price_fen,
                        r.steps,
                    )
                    for r in rs
                ],
            }
            try:
                await client.send(peer, "/v1/federation/hub/routes", client.build(peer, "hub_routes", body))
            except (PeerUnavailableError, PeerRefusedError) as exc:
                return member, f"failed: {exc.message}"
            return member, "sent"

        return dict(await asyncio.gather(*(one(m, rs) for m, rs in sorted(by_buyer.items()))))

    def view(self) -> dict[str, Any]:
        """GET /v1/federation/hub: role, members with fresh summaries, rounds and the last round's figures."""
        now = self.clock()
        lat = sorted(self.route_latency_ms)
        return {
            "hub_mode": self.is_hub,
            "hub": self.hub_authority,
            "members": sorted(m for m, s in self.supply.items() if s.expires_at > now),
            "rounds": self.rounds,
            "last_round": self.last_round,
            "recent_rounds": list(self.history),
            "counts": dict(self.counts),
            "route_to_contract_ms_p50": lat[len(lat) // 2] if lat else None,
            "route_to_contract_ms_p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        }

    # -------------------------------------------------------------------------------------- loops

    async def _loop(self, name: str, interval: float, tick: Any, wake: asyncio.Event | None = None) -> None:
        while True:
            try:
                await tick()
            except asyncio.CancelledError:
                raise
            except (PeerUnavailableError, PeerRefusedError) as exc:
                log.info("hub %s: %s", name, exc.message)
            except HetexError as exc:  # e.g. our hub is not a peer yet (named before the operator added it)
                log.warning("hub %s: %s", name, exc.message)
            except Exception:
                log.exception("hub %s failed; retrying in %s s", name, interval)
            if wake is None:
                await asyncio.sleep(interval)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval)
            wake.clear()

    def background_tasks(self) -> list[Coroutine[Any, Any, None]]:
        """The loops `hetex serve` runs: publishing to our hub, and hub rounds when we are one."""
        loops: list[Coroutine[Any, Any, None]] = []
        s = self.settings
        if self.hub_authority and s.federation_summary_interval_seconds > 0:
            loops.append(self._loop("publish", s.federation_summary_interval_seconds, self.publish, self._publish_now))
        if self.is_hub and s.federation_hub_round_interval_seconds > 0:
            loops.append(self._loop("round", s.federation_hub_round_interval_seconds, self.hub_round))
        return loops

    async def close(self) -> None:
        """Cancel route tasks still running."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
