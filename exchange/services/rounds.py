"""Clearing rounds: snapshot the market, clear it with `matching`, and turn the result into contracts.

A round runs under the round lock (one round at a time across processes, see round_lock.py):
1. one read transaction takes a consistent snapshot (open orders whose start window opens within the
   horizon, live offers, contracts holding capacity; plain columns, no ORM objects); on SQLite it runs on
   the read-only connection (storage.engine.make_read_engine), so requests keep the one writing
   connection meanwhile; a short write transaction records the round as `running`;
2. `matching.clearing.clear` runs in the solver process (solver.py), outside any database transaction,
   so the API's event loop stays free;
3. prepare, in a read transaction (outside the write lock): re-check every allocation against the offers
   as they are now (drop_reason: order unchanged, offer open, lease inside its window, pool and offer
   capacity never exceeded at any time counting every contract and hold), build the kept orders'
   contracts and sign their log records (the CPU work), yielding to the event loop as it goes;
4. one write transaction locks the allocated offers, pools and orders, checks every prepared order again
   on what they are now (an amendment or cancellation that landed after step 3 still wins), appends the
   signed records (signed again if the exchange key rotated since step 3) and inserts the contracts in
   Core batches, updates order fills, expires orders whose start window passed, stores posted prices and
   marks the round `completed` with its statistics (each dropped allocation with its reason) and audit.
A graceful shutdown (stop) lets the running round finish within a grace period or abandons it.
Nothing of a round is visible until step 3 commits, so a process killed mid-round leaves no contract
and no reservation; the next round marks its `running` row `abandoned`.

Test hook (tests only, documented here): environment variable HETEX_TEST_KILL_ROUND makes the process
exit abruptly (os._exit(9)) at a point of the round: `after_solve` (solved, before the write
transaction) or `before_commit` (contracts written, transaction not committed).
HETEX_TEST_ROUND_DELAY=<seconds> makes the round wait that long after its snapshot, before solving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.billing.compute_tier import TierTable
from exchange.billing.tiers import load_tier_table
from exchange.services.contracts import ContractService, MatchFacts
from exchange.services.disclosure import (
    aggregate_minimum,
    audit_order_ids,
    may_read,
    public_aggregate,
    round_disclosure,
)
from exchange.services.federation_capacity import held_lines, orders_in_flight
from exchange.services.lease import Fence
from exchange.services.ledger import SignedRecord
from exchange.services.registration import live_offers_query
from exchange.services.round_lock import RoundBusyError, RoundLock
from exchange.services.snapshot import (
    ContractRow,
    OfferRow,
    OrderRow,
    Snapshot,
    build_snapshot,
    choose_slot,
    clearing_now,
)
from exchange.services.solver import SOLVERS, SolverPool, market_digest
from exchange.storage.base import now_s
from exchange.storage.contracts import Contract
from exchange.storage.orders import Order
from exchange.storage.participants import Participant
from exchange.storage.registration import Offer, Pool, Site
from exchange.storage.rounds import Round, RoundPrice
from identifiers.catalogue import Catalogue
from identifiers.errors import ConflictError, HetexError, NotFoundError
from identifiers.ids import new_id_str
from identifiers.regions import RegionTable
from matching.model import Allocation, ClearingResult, Market, Reservation, result_to_dict

if TYPE_CHECKING:
    from exchange.services.round_worker import RoundWorker

log = logging.getLogger("hetex.rounds")

KILL_HOOK_ENV = "HETEX_TEST_KILL_ROUND"
ABANDON_LOCK_WAIT_SECONDS = 5.0  # shutdown: how long to wait for a killed round worker's lock to go
DELAY_HOOK_ENV = "HETEX_TEST_ROUND_DELAY"
OPEN_ORDER_STATUSES = ("open", "partially_filled")
RELEASED_CONTRACT_STATUSES = ("cancelled",)
TRIGGERS = ("interval", "operator", "cli", "test")


class UnknownRoundError(NotFoundError):
    """No clearing round has this id."""

    code = "unknown_round"


class RoundsStoppingError(ConflictError):
    """The exchange process is shutting down and starts no new clearing round."""

    code = "shutting_down"


class UnknownFillSubjectError(NotFoundError):
    """No order or offer has this id."""

    code = "unknown_fill_subject"


class Viewer(Protocol):
    """The authenticated caller as services see it (exchange.services.principals.Principal)."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str: ...

    def require_owner(self, owner_id: str, what: str) -> None: ...


def _require_reader(who: Viewer, owner_id: str, what: str) -> None:
    """The owner, the operator and regulators may read fills (disclosure.may_read); anyone else is refused."""
    if not may_read(who, (owner_id,)):
        who.require_owner(owner_id, what)


@dataclass(frozen=True)
class RoundSummary:
    """What a finished round reports to its trigger (API, CLI, interval task)."""

    round_id: str
    status: str
    trigger: str
    orders: int
    offers: int
    contract_ids: tuple[str, ...]
    matched_devices: int
    welfare_fen: int
    lp_bound_fen: int
    gap: str
    dropped_allocations: int
    expired_orders: int
    seconds: float


Held = tuple[str, str, tuple[int, int, int]]


@dataclass
class Recheck:
    """Capacity bookkeeping during the commit step: intervals that hold each pool and each offer."""

    pool_caps: dict[str, int]
    offer_caps: dict[str, int]
    by_pool: dict[str, list[tuple[int, int, int]]] = field(default_factory=lambda: defaultdict(list))
    by_offer: dict[str, list[tuple[int, int, int]]] = field(default_factory=lambda: defaultdict(list))
    #: what the database held on each pool and offer before this round added anything (sorted intervals)
    base_pool: dict[str, tuple[tuple[int, int, int], ...]] = field(default_factory=dict)
    base_offer: dict[str, tuple[tuple[int, int, int], ...]] = field(default_factory=dict)

    def freeze_base(self) -> None:
        """Record the holdings read from the database, to tell later whether they changed."""
        self.base_pool = {p: tuple(sorted(self.by_pool.get(p, ()))) for p in self.pool_caps}
        self.base_offer = {o: tuple(sorted(self.by_offer.get(o, ()))) for o in self.offer_caps}

    def fits(self, pool_id: str, offer_id: str, devices: int, start: int, end: int, extra: Sequence[Held] = ()) -> bool:
        """True if adding `devices` over [start, end) keeps the pool and the offer within capacity, counting
        the not yet added pieces `extra` (pool id, offer id, interval) of the same order."""
        on_pool = self.by_pool[pool_id] + [iv for p, _o, iv in extra if p == pool_id]
        on_offer = self.by_offer[offer_id] + [iv for _p, o, iv in extra if o == offer_id]
        return peak(on_pool, start, end) + devices <= self.pool_caps.get(pool_id, 0) and (
            peak(on_offer, start, end) + devices <= self.offer_caps.get(offer_id, 0)
        )

    def add(self, pool_id: str, offer_id: str | None, devices: int, start: int, end: int) -> None:
        """Count a holding interval."""
        self.by_pool[pool_id].append((start, end, devices))
        if offer_id is not None:
            self.by_offer[offer_id].append((start, end, devices))


def peak(intervals: Sequence[tuple[int, int, int]], start: int, end: int) -> int:
    """Largest total of devices held at any instant of [start, end) by half-open intervals."""
    events: list[tuple[int, int]] = []
    for s, e, d in intervals:
        if s < end and e > start:
            events.append((max(s, start), d))
            events.append((min(e, end), -d))
    events.sort(key=lambda x: (x[0], x[1]))  # releases before acquisitions at the same instant
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


DROP_REASONS = (
    "order_gone",  # the order no longer exists
    "order_changed",  # the buyer amended or cancelled it, or it filled, since the snapshot
    "offer_closed",  # the offer was withdrawn or closed since the snapshot
    "pool_inactive",  # the pool was retired since the snapshot
    "outside_offer_window",  # the offer's window shrank and no longer covers the lease
    "below_min_lease",  # the offer's minimum lease grew above the lease
    "billing_mode_withdrawn",  # the offer no longer accepts the order's billing mode
    "capacity",  # the pool or the offer no longer has the devices over the lease (reduced, or sold)
    "contract_refused",  # creating the contract was refused (its error is logged)
)


def drop_reason(
    row: Any,
    seen: OrderRow | None,
    pieces: Sequence[Allocation],
    offers: dict[str, Any],
    pools: dict[str, Any],
    check: Recheck,
) -> str | None:
    """Why an order's allocations cannot become contracts at commit (one of DROP_REASONS), or None.
    `row`, `offers` and `pools` are the rows as they are now (ORDER_CHECK_COLUMNS, OFFER_CHECK_COLUMNS,
    pool id/status/devices).

    The order must be unchanged since the snapshot. Offers are judged on what they are now, not on their
    version: an amendment that keeps the lease possible (an ask change, a longer window) keeps the
    allocation; one that takes it away (withdrawal, shorter window, fewer devices) wins and drops it.
    Capacity counts every contract and hold on the pool and the offer at every instant of the lease."""
    if row is None or seen is None:
        return "order_gone"
    if (row.status, row.filled_devices, row.updated_at) != (seen.status, seen.filled_devices, seen.updated_at):
        return "order_changed"
    extra: list[Held] = []
    for a in pieces:
        offer = offers.get(a.pool_id)
        if offer is None or offer.status != "open":
            return "offer_closed"
        pool = pools.get(offer.pool_id)
        if pool is None or pool.status != "active":
            return "pool_inactive"
        if a.start < offer.window_start or (offer.window_end is not None and a.end > offer.window_end):
            return "outside_offer_window"
        if a.end - a.start < offer.min_lease_seconds:
            return "below_min_lease"
        if row.billing_mode not in offer.billing_modes:
            return "billing_mode_withdrawn"
        if not check.fits(offer.pool_id, offer.id, a.devices, a.start, a.end, extra):
            return "capacity"
        extra.append((offer.pool_id, offer.id, (a.start, a.end, a.devices)))
    return None


#: what the commit reads of allocated offers and orders (plain columns, no ORM objects)
OFFER_CHECK_COLUMNS = (
    Offer.id,
    Offer.pool_id,
    Offer.provider_id,
    Offer.status,
    Offer.devices,
    Offer.window_start,
    Offer.window_end,
    Offer.min_lease_seconds,
    Offer.billing_modes,
)
ORDER_CHECK_COLUMNS = (
    Order.id,
    Order.buyer_id,
    Order.status,
    Order.filled_devices,
    Order.quantity_devices,
    Order.updated_at,
    Order.billing_mode,
    Order.spec,
)
#: the prepare step's CPU-bound loop gives the event loop back after this many seconds of work: long enough
#: that a round keeps its share of a loop busy with requests (yielding every 32 orders, ~8 ms, let a
#: loaded loop run a round's prepare three times slower than idle), short enough to add little to a
#: request's latency
YIELD_AFTER = 0.025


@dataclass
class Plan:
    """A round's commit prepared outside the write transaction: per allocated order (in clearing order)
    either its allocations, built contracts and signed records, or its allocations and why they drop."""

    key_id: str
    stats: dict[str, Any]
    #: the allocated offers, pools and orders and the capacity held on them, as the prepare step read them
    seen: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] = field(default_factory=lambda: ({}, {}, {}))
    seen_check: Recheck | None = None
    order_ids: list[str] = field(default_factory=list)
    kept: dict[str, tuple[list[Allocation], list[Contract], list[SignedRecord]]] = field(default_factory=dict)
    dropped: dict[str, tuple[list[Allocation], str]] = field(default_factory=dict)

    def unchanged(
        self,
        order_id: str,
        pieces: Sequence[Allocation],
        offers: dict[str, Any],
        pools: dict[str, Any],
        orders: dict[str, Any],
        check: Recheck,
    ) -> bool:
        """True if the order, its offers and pools, and every capacity held on them from outside this round
        are exactly what the prepare step checked: its verdict then stands (the round's own earlier orders
        can only have dropped since, which frees capacity), so the commit skips the capacity sweep."""
        seen_offers, seen_pools, seen_orders = self.seen
        prior = self.seen_check
        if prior is None or orders.get(order_id) != seen_orders.get(order_id):
            return False
        for a in pieces:
            offer = offers.get(a.pool_id)
            if offer is None or offer != seen_offers.get(a.pool_id):
                return False
            pool = offer.pool_id
            if pools.get(pool) != seen_pools.get(pool) or check.base_pool.get(pool) != prior.base_pool.get(pool):
                return False
            if check.base_offer.get(offer.id) != prior.base_offer.get(offer.id):
                return False
        return True


def dropped_entry(a: Allocation, reason: str) -> dict[str, Any]:
    """One dropped allocation as the round record lists it."""
    return {
        "order_id": a.order_id,
        "offer_id": a.pool_id,
        "devices": a.devices,
        "start_at": a.start,
        "end_at": a.end,
        "reason": reason,
    }


@dataclass(frozen=True)
class Routed:
    """What a hub routed to this exchange for one of its own orders: the models and regions to fill it on,
    and the devices per ladder step ((region, model, ask), devices) of our own capacity (None: not known)."""

    models: tuple[str, ...]
    regions: tuple[str, ...]
    steps: tuple[tuple[tuple[str, str, int], int], ...] | None = None


def restrict_to_routes(market: Market, routed: Mapping[str, Routed]) -> Market:
    """The market with only the routed orders, each narrowed to its routed models and regions (its limits,
    shape and window unchanged: the round's objective and prices apply as to any order). When every routed
    order names its ladder steps, the pools are narrowed too: only offers at a routed (region, model, ask),
    and on each step only the devices routed to these orders (the rest of a step, and every other step, the
    hub gave to other exchanges' orders whose holds may not have arrived yet)."""
    orders = []
    for o in market.orders:
        r = routed.get(o.id)
        if r is None:
            continue
        models = tuple(m for m in (o.models or r.models) if m in r.models)
        regions = tuple(x for x in (o.regions or r.regions) if x in r.regions)
        if models and regions:
            orders.append(dataclasses.replace(o, models=models, regions=regions))
    if not routed or any(r.steps is None for r in routed.values()):
        return dataclasses.replace(market, orders=tuple(orders))
    allowed: dict[tuple[str, str, int], int] = {}
    for r in routed.values():
        for step, n in r.steps or ():
            allowed[step] = allowed.get(step, 0) + n
    slot = market.slot_seconds
    slot0 = market.now - market.now % slot
    horizon = market.max_start_slots + max((-(-o.duration_seconds // slot) for o in orders), default=1)
    windows = [(slot0 + k * slot, slot0 + (k + 1) * slot) for k in range(horizon)]
    pools = []
    for p in sorted(market.pools, key=lambda p: p.id):
        step = (p.region, p.model, p.ask_fen)
        left = allowed.get(step, 0)
        if left <= 0:
            continue
        # free in every slot an order of this round may use: devices less the most reserved in one of them
        free = p.devices - max(sum(r.devices for r in p.reserved if r.start < e and r.end > s) for s, e in windows)
        keep = min(max(0, free), left)
        allowed[step] = left - keep
        if keep <= 0:
            continue
        if keep < free:  # the rest of this offer is not ours to clear in this round
            p = dataclasses.replace(p, reserved=(*p.reserved, Reservation(free - keep, slot0, windows[-1][1])))
        pools.append(p)
    return dataclasses.replace(market, orders=tuple(orders), pools=tuple(pools))


def _kill_hook(point: str) -> None:
    """Test hook: die abruptly at `point` when HETEX_TEST_KILL_ROUND names it (see module docstring)."""
    if os.environ.get(KILL_HOOK_ENV) == point:
        log.warning("test hook %s=%s: exiting abruptly", KILL_HOOK_ENV, point)
        from exchange.services.round_worker import in_worker

        if in_worker():  # the round worker of a server: the server dies with it
            os.kill(os.getppid(), signal.SIGKILL)
        os._exit(9)


def snapshot_hash(market: Market) -> str:
    """SHA-256 of the snapshot's JSON form: names exactly what the round cleared."""
    return market_digest(market)


def round_view(row: Round) -> dict[str, Any]:
    """JSON form of a round with its statistics and audit."""
    return {
        "id": row.id,
        "status": row.status,
        "trigger": row.trigger,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "market_now": row.market_now,
        "snapshot_hash": row.snapshot_hash,
        "method": row.method,
        "pricing_rule": row.pricing_rule,
        "orders": row.orders_count,
        "offers": row.offers_count,
        "contracts": row.contracts_count,
        "matched_orders": row.matched_orders,
        "matched_devices": row.matched_devices,
        "dropped_allocations": row.dropped_allocations,
        "dropped": row.dropped or [],
        "expired_orders": row.expired_orders,
        "welfare_fen": row.welfare_fen,
        "lp_bound_fen": row.lp_bound_fen,
        "gap": row.gap,
        "stats": row.stats,
        "audit": row.audit,
        "error": row.error,
    }


class RoundService:
    """Runs clearing rounds and answers questions about them, the market and fills.

    `repeatable_snapshot` (PostgreSQL, when the service owns its connections): the snapshot transaction
    runs at REPEATABLE READ, so every query of the snapshot sees one committed state.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        lock: RoundLock,
        contracts: ContractService,
        catalogue: Catalogue,
        regions: RegionTable,
        *,
        fee_bps: int,
        heartbeat_timeout_seconds: int,
        slot_seconds: int = 300,
        max_start_slots: int = 4,
        method: str = "mcf",
        solve_time_limit: float = 30.0,
        lock_timeout: float = 120.0,
        repeatable_snapshot: bool = False,
        tiers: Callable[[], TierTable] = load_tier_table,
        disclosure_min_orders: int = 3,
        solver: SolverPool | None = None,
        read_sessions: async_sessionmaker[AsyncSession] | None = None,
        worker: RoundWorker | None = None,
    ) -> None:
        self.sessions = sessions
        self.read_sessions = read_sessions if read_sessions is not None else sessions
        self.lock = lock
        self.contracts = contracts
        self.catalogue = catalogue
        self.regions = regions
        self.fee_bps = fee_bps
        self.heartbeat_timeout_seconds = heartbeat_timeout_seconds
        self.slot_seconds = slot_seconds
        self.max_start_slots = max_start_slots
        self.method = method
        self.solve_time_limit = solve_time_limit
        self.lock_timeout = lock_timeout
        self.repeatable_snapshot = repeatable_snapshot
        self.tiers = tiers
        self.disclosure_min_orders = disclosure_min_orders
        self.solver = solver if solver is not None else SOLVERS
        #: when set (`hetex serve`, settings.round_process), whole rounds run in this child process
        self.worker = worker
        self._dispatch = asyncio.Lock()  # with a worker: one round at a time from this process
        self._stopping = False
        self._current: asyncio.Task[Any] | None = None

    # ------------------------------------------------------------------------------------ snapshot

    async def _rows(self, session: AsyncSession, now: int) -> tuple[list[OfferRow], list[OrderRow], list[ContractRow]]:
        """Live offers, open orders within the horizon, and capacity-holding contracts, as of `now` (plain
        columns, not ORM objects: the snapshot reads thousands of rows and builds no identity map)."""
        horizon_end = now + self.slot_seconds * self.max_start_slots
        offer_q = live_offers_query(now, heard_since=now_s() - self.heartbeat_timeout_seconds).with_only_columns(
            Offer.id,
            Offer.version,
            Offer.provider_id,
            Pool.id.label("pool_id"),
            Pool.devices.label("pool_devices"),
            Site.id.label("site_id"),
            Site.region,
            Pool.model,
            Pool.memory_gb,
            Offer.devices,
            Pool.devices_per_node,
            Offer.window_start,
            Offer.window_end,
            Offer.min_lease_seconds,
            Offer.ask_fen,
            Offer.billing_modes,
        )
        offers = [
            OfferRow(
                offer_id=o.id,
                offer_version=o.version,
                provider_id=o.provider_id,
                pool_id=o.pool_id,
                pool_devices=o.pool_devices,
                site_id=o.site_id,
                region=o.region,
                model=o.model,
                memory_gb=o.memory_gb,
                devices=o.devices,
                devices_per_node=o.devices_per_node,
                window_start=o.window_start,
                window_end=o.window_end,
                min_lease_seconds=o.min_lease_seconds,
                ask_fen=o.ask_fen,
                billing_modes=tuple(o.billing_modes),
            )
            for o in (await session.execute(offer_q)).all()
        ]
        order_q = (
            select(
                Order.id,
                Order.buyer_id,
                Order.status,
                Order.spec,
                Order.quantity_devices,
                Order.filled_devices,
                Order.updated_at,
                Order.created_at,
                Order.filled_scu,
                Participant.home_region,
            )
            .join(Participant, Order.buyer_id == Participant.id)
            .where(
                Order.status.in_(OPEN_ORDER_STATUSES),
                or_(Order.start_latest.is_(None), Order.start_latest >= now),
                Order.id.not_in(orders_in_flight()),  # federation: a peer holds capacity for it
            )
            .order_by(Order.created_at, Order.id)
        )
        orders = []
        for o in (await session.execute(order_q)).all():
            earliest = o.spec.get("start_earliest")
            if earliest is not None and earliest > horizon_end:
                continue
            orders.append(
                OrderRow(
                    order_id=o.id,
                    buyer_id=o.buyer_id,
                    status=o.status,
                    spec=o.spec,
                    quantity_devices=o.quantity_devices,
                    filled_devices=o.filled_devices,
                    updated_at=o.updated_at,
                    created_at=o.created_at,
                    home_region=o.home_region,
                    filled_scu=o.filled_scu,
                )
            )
        pool_ids = sorted({o.pool_id for o in offers})
        contracts = [
            ContractRow(c.id, c.pool_id, c.offer_id, c.devices, c.start_at, c.end_at)
            for c in await self._holding(session, pool_ids, now)
        ]
        # federation: capacity held for a peer's order reserves like a contract until the hold ends
        contracts += [
            ContractRow(h.contract_id, h.pool_id, h.offer_id, h.devices, h.start_at, h.end_at)
            for h in await held_lines(session, pool_ids, now)
        ]
        return offers, orders, contracts

    async def _holding(self, session: AsyncSession, pool_ids: Sequence[str], after: int) -> list[Any]:
        """Contracts on these pools that still hold capacity after `after` (id, pool_id, offer_id, devices,
        start_at, end_at)."""
        if not pool_ids:
            return []
        q = select(
            Contract.id, Contract.pool_id, Contract.offer_id, Contract.devices, Contract.start_at, Contract.end_at
        ).where(
            Contract.pool_id.in_(pool_ids),
            Contract.status.not_in(RELEASED_CONTRACT_STATUSES),
            Contract.end_at > after,
        )
        return list((await session.execute(q)).all())

    async def snapshot(self, session: AsyncSession, wall: int | None = None) -> Snapshot:
        """The current market as a snapshot (clearing time: the next slot boundary)."""
        wall = now_s() if wall is None else wall
        now = clearing_now(wall, self.slot_seconds)
        offers, orders, contracts = await self._rows(session, now)
        slot = choose_slot(self.slot_seconds, orders, len(offers), self.max_start_slots)
        now = clearing_now(wall, slot)
        return build_snapshot(
            now=now,
            offers=offers,
            orders=orders,
            contracts=contracts,
            catalogue=self.catalogue,
            regions=self.regions,
            slot_seconds=slot,
            max_start_slots=self.max_start_slots,
            fee_bps=self.fee_bps,
            tiers=self.tiers(),
        )

    async def market_snapshot(self) -> Market:
        """The current market for `hetex market snapshot` (read only; no round is recorded)."""
        async with self.sessions() as session:
            return (await self.snapshot(session)).market

    # ------------------------------------------------------------------------------------ the round

    async def run_round(
        self, trigger: str, fence: Fence | None = None, *, routed: Mapping[str, Routed] | None = None
    ) -> RoundSummary:
        """Run one clearing round end to end (serialized across processes by the round lock); a periodic
        round passes the duties lease's `fence`, so its writes are refused once another process took over.
        `routed` (a coupled hub member, exchange/services/hub.py): only these orders, each on the models and
        regions its hub routed to this exchange, the rest of the round unchanged (objective, prices, commit)."""
        if self._stopping:
            raise RoundsStoppingError("the exchange is shutting down; no new clearing round starts")
        if self.worker is not None:
            return await self._run_in_worker(self.worker, trigger, fence, routed)
        async with self.lock.hold(self.lock_timeout):
            if self._stopping:
                raise RoundsStoppingError("the exchange is shutting down; no new clearing round starts")
            self._current = asyncio.current_task()
            try:
                return await self._run_locked(trigger, fence, routed)
            finally:
                self._current = None

    async def _run_in_worker(
        self, worker: RoundWorker, trigger: str, fence: Fence | None, routed: Mapping[str, Routed] | None
    ) -> RoundSummary:
        """The round in the worker process (it takes the round lock there); rounds asked of this process
        wait their turn here, up to the lock timeout like a round waiting for the lock."""
        try:
            await asyncio.wait_for(self._dispatch.acquire(), timeout=max(self.lock_timeout, 0.001))
        except TimeoutError:
            raise RoundBusyError("another clearing round is running in this process; retry later") from None
        try:
            if self._stopping:
                raise RoundsStoppingError("the exchange is shutting down; no new clearing round starts")
            self._current = asyncio.current_task()
            return await worker.run(trigger, fence, routed)
        finally:
            self._current = None
            self._dispatch.release()

    async def stop(self, grace_seconds: float) -> str | None:
        """Graceful shutdown: start no new round; give the running one `grace_seconds` to finish, then
        abandon it (its solve is killed, its transaction rolled back, its row marked `abandoned`, the round
        lock released). Returns "finished", "abandoned" or None (no round was running)."""
        self._stopping = True
        task = self._current
        if task is None or task.done():
            return None
        done, _ = await asyncio.wait({task}, timeout=grace_seconds)
        if done:
            return "finished"
        if self.worker is not None:
            # the child dies with its transaction (rolled back) and its lock; its row is marked here
            self.worker.kill()
            task.cancel()
            await asyncio.wait({task}, timeout=30)
            await self._mark_running_abandoned("the exchange shut down during the round")
            return "abandoned"
        self.solver.kill()
        task.cancel()
        await asyncio.wait({task}, timeout=30)
        return "abandoned"

    async def _solve(self, market: Market) -> tuple[str, ClearingResult]:
        """Clear the snapshot off the event loop, in the solver process (exchange/services/solver.py):
        (the snapshot's SHA-256, the result)."""
        delay = os.environ.get(DELAY_HOOK_ENV)
        if delay:  # test hook (module docstring)
            await asyncio.sleep(float(delay))
        return await self.solver.clear(market, method=self.method, time_limit=self.solve_time_limit)

    async def sweep_abandoned(self, fence: Fence | None = None) -> int:
        """Mark `abandoned` the rounds left `running` by a process that died (only when no round holds the
        round lock, so none of them is really running); the number marked. A busy lock: 0, try later."""
        try:
            async with self.lock.hold(0), self.sessions.begin() as session:
                if fence is not None:
                    await fence.check(session)
                result = await session.execute(
                    update(Round)
                    .where(Round.status == "running")
                    .values(status="abandoned", finished_at=now_s(), error="the process running it stopped")
                )
                swept = int(result.rowcount)  # type: ignore[attr-defined]
        except RoundBusyError:
            return 0
        if swept:
            log.warning("%d clearing round(s) left running by a stopped process marked abandoned", swept)
        return swept

    async def _run_locked(
        self, trigger: str, fence: Fence | None = None, routed: Mapping[str, Routed] | None = None
    ) -> RoundSummary:
        t0 = time.perf_counter()
        round_id = new_id_str()
        # the snapshot: a read transaction (on SQLite the read-only connection: requests keep the writer)
        async with self.read_sessions.begin() as reader:
            if self.repeatable_snapshot:
                await reader.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            snap = await self.snapshot(reader)
        if routed is not None:
            snap = dataclasses.replace(snap, market=restrict_to_routes(snap.market, routed))
        market = snap.market
        async with self.sessions.begin() as session:
            if fence is not None:
                await fence.check(session)
            await session.execute(
                update(Round)
                .where(Round.status == "running")
                .values(status="abandoned", finished_at=now_s(), error="the process running it stopped")
            )
            session.add(
                Round(
                    id=round_id,
                    started_at=now_s(),
                    status="running",
                    trigger=trigger,
                    market_now=market.now,  # snapshot_hash: set when solved (the worker hashes it)
                    method=self.method,
                    orders_count=len(market.orders),
                    offers_count=len(market.pools),
                )
            )
        phases = {"snapshot_seconds": time.perf_counter() - t0}
        try:
            t1 = time.perf_counter()
            digest, result = await self._solve(market)
            phases["solve_wait_seconds"] = time.perf_counter() - t1
            _kill_hook("after_solve")
            t2 = time.perf_counter()
            async with self.read_sessions.begin() as reader:
                plan = await self._prepare(reader, round_id, snap, result)
            phases["prepare_seconds"] = time.perf_counter() - t2
            async with self.sessions.begin() as session:
                if fence is not None:
                    await fence.check(session)  # first: a takeover waits for this commit, or it is refused
                summary = await self._commit(session, round_id, trigger, snap, result, digest, phases, plan)
                _kill_hook("before_commit")
        except asyncio.CancelledError:
            log.warning("round %s abandoned: the exchange is shutting down", round_id)
            await asyncio.shield(self._mark_ended(round_id, "abandoned", "the exchange shut down during the round"))
            raise
        except Exception as exc:
            await self._mark_failed(round_id, exc)
            raise
        log.info(
            "round %s (%s): %d orders, %d offers -> %d contracts, %d devices, welfare %d fen, gap %s",
            round_id,
            trigger,
            summary.orders,
            summary.offers,
            len(summary.contract_ids),
            summary.matched_devices,
            summary.welfare_fen,
            summary.gap,
        )
        return RoundSummary(**{**summary.__dict__, "seconds": round(time.perf_counter() - t0, 6)})

    async def _mark_running_abandoned(self, error: str) -> None:
        """After killing the worker mid-round: mark `running` rows abandoned under the round lock (free once the
        dead child's connection or file lock is gone). If another process holds the lock, its round is the one
        running (ours was still waiting for the lock): nothing is marked, and the next round sweeps ours."""
        try:
            async with self.lock.hold(ABANDON_LOCK_WAIT_SECONDS), self.sessions.begin() as session:
                stmt = update(Round).where(Round.status == "running")
                await session.execute(stmt.values(status="abandoned", finished_at=now_s(), error=error))
        except RoundBusyError:
            log.warning("another process is running a round; the abandoned one is marked by the next round")

    async def _mark_failed(self, round_id: str, exc: Exception) -> None:
        await self._mark_ended(round_id, "failed", f"{type(exc).__name__}: {exc}")

    async def _mark_ended(self, round_id: str, status: str, error: str) -> None:
        """Mark a round that did not complete `failed` or `abandoned`, with the reason."""
        try:
            async with self.sessions.begin() as session:
                await session.execute(
                    update(Round)
                    .where(Round.id == round_id, Round.status == "running")
                    .values(status=status, finished_at=now_s(), error=error[:2000])
                )
        except Exception:  # pragma: no cover - the database itself is failing; the caller logs the cause
            log.exception("could not mark round %s %s", round_id, status)

    async def _rows_now(
        self, session: AsyncSession, allocations: Sequence[Allocation], *, lock: bool
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The allocated offers, their pools and the allocated orders as they are now (plain columns; locked
        FOR UPDATE in the write transaction)."""
        offer_ids = sorted({a.pool_id for a in allocations})
        order_ids = sorted({a.order_id for a in allocations})

        async def rows(q: Any) -> dict[str, Any]:
            q = q.with_for_update() if lock else q
            return {r.id: r for r in (await session.execute(q)).all()}

        offers = await rows(select(*OFFER_CHECK_COLUMNS).where(Offer.id.in_(offer_ids)).order_by(Offer.id))
        pool_ids = sorted({o.pool_id for o in offers.values()})
        pools = await rows(select(Pool.id, Pool.status, Pool.devices).where(Pool.id.in_(pool_ids)).order_by(Pool.id))
        orders = await rows(select(*ORDER_CHECK_COLUMNS).where(Order.id.in_(order_ids)).order_by(Order.id))
        return offers, pools, orders

    async def _recheck(self, session: AsyncSession, offers: dict[str, Any], pools: dict[str, Any], now: int) -> Recheck:
        """Capacity bookkeeping from every contract and federation hold on these pools after `now`."""
        check = Recheck(
            pool_caps={p.id: p.devices for p in pools.values() if p.status == "active"},
            offer_caps={o.id: o.devices for o in offers.values()},
        )
        pool_ids = sorted(pools)
        for c in await self._holding(session, pool_ids, now):
            check.add(c.pool_id, c.offer_id, c.devices, c.start_at, c.end_at)
        for h in await held_lines(session, pool_ids, now):  # federation holds reserve like contracts
            check.add(h.pool_id, h.offer_id, h.devices, h.start_at, h.end_at)
        check.freeze_base()
        return check

    async def _prepare(self, session: AsyncSession, round_id: str, snap: Snapshot, result: ClearingResult) -> Plan:
        """Before the write transaction, in a read transaction: check every allocation against the market as
        it is now (drop_reason), build the kept orders' contracts and sign their log records. The commit
        checks again under its locks and writes only what still passes; this moves the CPU work (contract
        terms, canonical bytes, signatures) out of the transaction every request's write waits for."""
        allocs: dict[str, list[Allocation]] = defaultdict(list)
        for a in result.allocations:
            allocs[a.order_id].append(a)
        offers, pools, orders = await self._rows_now(session, result.allocations, lock=False)
        check = await self._recheck(session, offers, pools, snap.market.now)
        parties = {o.provider_id for o in offers.values()} | {o.buyer_id for o in orders.values()}
        facts = await self.contracts.match_facts(session, sorted(pools), sorted(parties))
        signer = await self.contracts.ledger.signer(session)
        seq = {o.id: o.seq for o in snap.market.orders}
        plan = Plan(key_id=signer[0], stats=result_to_dict(result), seen=(offers, pools, orders), seen_check=check)
        slice_start = time.perf_counter()
        for order_id in sorted(allocs, key=lambda oid: seq.get(oid, 0)):
            if time.perf_counter() - slice_start >= YIELD_AFTER:
                await asyncio.sleep(0)  # CPU-bound loop: let the event loop serve requests meanwhile
                slice_start = time.perf_counter()
            pieces = allocs[order_id]
            row = orders.get(order_id)
            reason = drop_reason(row, snap.orders.get(order_id), pieces, offers, pools, check)
            built = None
            if reason is None and row is not None:
                built = self._build_contracts(facts, round_id, row, pieces, offers)
            plan.order_ids.append(order_id)
            if built is None:
                plan.dropped[order_id] = (pieces, reason or "contract_refused")
                continue
            for a in pieces:
                check.add(offers[a.pool_id].pool_id, a.pool_id, a.devices, a.start, a.end)
            plan.kept[order_id] = (pieces, built, self.contracts.sign_matched(built, facts, signer))
        return plan

    async def _commit(
        self,
        session: AsyncSession,
        round_id: str,
        trigger: str,
        snap: Snapshot,
        result: ClearingResult,
        digest: str,
        phases: dict[str, float],
        plan: Plan,
    ) -> RoundSummary:
        """Re-check the prepared contracts under locks and write them with the round's fills, prices and
        statistics (one transaction). `phases`: wall seconds of the round's earlier steps, stored in
        stats.round_phases with the commit's."""
        t0 = time.perf_counter()
        market = snap.market
        kept_allocations = [a for pieces, _built, _signed in plan.kept.values() for a in pieces]
        offers, pools, orders = await self._rows_now(session, kept_allocations, lock=True)
        check = await self._recheck(session, offers, pools, market.now)
        made: list[Contract] = []
        signed: list[SignedRecord] = []
        fills: list[dict[str, Any]] = []
        matched_devices = 0
        matched_orders = 0
        dropped: list[dict[str, Any]] = []
        now = now_s()
        for order_id in plan.order_ids:
            if order_id in plan.dropped:
                pieces, reason = plan.dropped[order_id]
                dropped.extend(dropped_entry(a, reason) for a in pieces)
                continue
            pieces, built, records = plan.kept[order_id]
            row = orders.get(order_id)
            later = None
            if not plan.unchanged(order_id, pieces, offers, pools, orders, check):
                later = drop_reason(row, snap.orders.get(order_id), pieces, offers, pools, check)
            if later is not None or row is None:  # changed between the prepare step and the locks
                dropped.extend(dropped_entry(a, later or "order_gone") for a in pieces)
                continue
            for a in pieces:
                check.add(offers[a.pool_id].pool_id, a.pool_id, a.devices, a.start, a.end)
            devices = sum(a.devices for a in pieces)
            made.extend(built)
            signed.extend(records)
            matched_devices += devices
            matched_orders += 1
            filled = row.filled_devices + devices
            full = row.quantity_devices is None or filled >= row.quantity_devices
            fills.append({"id": order_id, "filled_devices": filled, "status": "filled" if full else "partially_filled"})
        await self.contracts.write_matched(session, made, signed, plan.key_id)  # Core batches: the lock is short
        if fills:  # ORM bulk UPDATE by primary key: one executemany
            await session.execute(update(Order), [{**f, "updated_at": now} for f in fills])
        contract_ids = [c.id for c in made]
        expired = await self._expire(session, market.now)
        stats = plan.stats
        self._store_prices(session, round_id, result, now)
        values = {
            "status": "completed",
            "finished_at": now_s(),
            "snapshot_hash": digest,
            "pricing_rule": result.audit.pricing_rule,
            "contracts_count": len(contract_ids),
            "matched_orders": matched_orders,
            "matched_devices": matched_devices,
            "dropped_allocations": len(dropped),
            "dropped": dropped,
            "expired_orders": expired,
            "welfare_fen": result.stats.welfare_fen,
            "lp_bound_fen": result.stats.lp_bound_fen,
            "gap": str(result.stats.gap),
            "stats": {
                **stats["stats"],
                "round_phases": {
                    **{k: round(v, 4) for k, v in phases.items()},
                    "commit_seconds": round(time.perf_counter() - t0, 4),
                },
            },
            "audit": stats["audit"],
        }
        await session.execute(update(Round).where(Round.id == round_id).values(**values))
        return RoundSummary(
            round_id=round_id,
            status="completed",
            trigger=trigger,
            orders=len(market.orders),
            offers=len(market.pools),
            contract_ids=tuple(contract_ids),
            matched_devices=matched_devices,
            welfare_fen=result.stats.welfare_fen,
            lp_bound_fen=result.stats.lp_bound_fen,
            gap=str(result.stats.gap),
            dropped_allocations=len(dropped),
            expired_orders=expired,
            seconds=0.0,
        )

    def _build_contracts(
        self, facts: MatchFacts, round_id: str, row: Any, pieces: Sequence[Allocation], offers: dict[str, Any]
    ) -> list[Contract] | None:
        """All contracts of one order, built but not written; None if one is refused (nothing of it is kept)."""
        try:
            return [
                self.contracts.build_from_match(
                    facts,
                    order_id=row.id,
                    pool_id=offers[a.pool_id].pool_id,
                    buyer_id=row.buyer_id,
                    provider_id=offers[a.pool_id].provider_id,
                    devices=a.devices,
                    start_at=a.start,
                    end_at=a.end,
                    buyer_price_fen=a.buyer_price_fen,
                    provider_price_fen=a.provider_price_fen,
                    billing_mode=row.billing_mode,
                    billing_terms=row.spec.get("billing_terms"),
                    offer_id=a.pool_id,
                    round_id=round_id,
                    fee_bps=self.fee_bps,
                )
                for a in pieces
            ]
        except HetexError as exc:
            log.warning("round %s: order %s not contracted: %s", round_id, row.id, exc.message)
            return None

    async def _expire(self, session: AsyncSession, now: int) -> int:
        """Open, unfilled orders whose start window closed before `now` become `expired`."""
        result = await session.execute(
            update(Order)
            .where(Order.status == "open", Order.start_latest.is_not(None), Order.start_latest < now)
            .values(status="expired", updated_at=now_s())
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def _store_prices(self, session: AsyncSession, round_id: str, result: ClearingResult, now: int) -> None:
        for p in result.prices:
            family = self.catalogue.get(p.model).family if p.model in self.catalogue else ""
            session.add(
                RoundPrice(
                    round_id=round_id,
                    cleared_at=now,
                    region=p.region,
                    model=p.model,
                    family=family,
                    gang=p.gang,
                    lease_slots=p.lease_slots,
                    start_at=p.start,
                    buyer_price=str(p.buyer_price),
                    buyer_price_fen=int(p.buyer_price.to_integral_value(rounding=ROUND_CEILING)),
                    min_ask_fen=p.min_ask_fen,
                    rent=str(p.rent),
                )
            )

    # ------------------------------------------------------------------------------------ reads

    async def get(self, round_id: str, viewer: Viewer | None = None) -> dict[str, Any]:
        """One round with its statistics and audit, as `viewer` may see it (exchange.services.disclosure:
        in full for the regulator and the operator, aggregates and the caller's own orders for anyone else)."""
        async with self.sessions() as session:
            row = await session.get(Round, round_id)
            if row is None:
                raise UnknownRoundError(f"no round {round_id}", field="id")
            view = round_view(row)
            made = (
                await session.execute(
                    select(Contract.id, Contract.order_id, Contract.region, Contract.model)
                    .where(Contract.round_id == round_id)
                    .order_by(Contract.id)
                )
            ).all()
            view["contract_ids"] = [c.id for c in made]
            prices = await self._round_prices(session, round_id, made)
            named = audit_order_ids(row.audit) | {c.order_id for c in made}
            own: set[str] = set()
            if viewer is not None and named:
                q = select(Order.id).where(Order.id.in_(sorted(named)), Order.buyer_id == viewer.id)
                own = set((await session.scalars(q)).all())
        return round_disclosure(
            view,
            viewer,
            contracts=[(c.id, c.order_id) for c in made],
            own_orders=own,
            prices=prices,
            min_orders=self.disclosure_min_orders,
        )

    def _family(self, model: str) -> str:
        return self.catalogue.get(model).family if model in self.catalogue else ""

    async def _round_prices(self, session: AsyncSession, round_id: str, made: Sequence[Any]) -> list[dict[str, Any]]:
        """Per (region, family): the round's lowest posted price per device-hour and how many orders contracted."""
        orders: dict[tuple[str, str], set[str]] = defaultdict(set)
        for c in made:
            orders[(c.region, self._family(c.model))].add(c.order_id)
        lowest: dict[tuple[str, str], Decimal] = {}
        for p in (await session.scalars(select(RoundPrice).where(RoundPrice.round_id == round_id))).all():
            key = (p.region, p.family)
            price = Decimal(p.buyer_price)
            if key not in lowest or price < lowest[key]:
                lowest[key] = price
        return [
            {
                "region": region,
                "family": family,
                "price_fen_per_device_hour": str(lowest[(region, family)]),
                "orders": len(orders.get((region, family), ())),
            }
            for region, family in sorted(lowest)
        ]

    async def list_rounds(self, *, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
        """Recent rounds, newest first (statistics without the per-check audit detail)."""
        q = select(Round).order_by(Round.started_at.desc(), Round.id.desc()).limit(limit)
        if before is not None:
            q = q.where(Round.started_at < before)
        async with self.sessions() as session:
            rows = (await session.execute(q)).scalars().all()
        out = []
        for r in rows:
            view = round_view(r)
            view.pop("audit")
            out.append(view)
        return out

    async def order_fills(self, who: Viewer, order_id: str) -> dict[str, Any]:
        """An order's fill status and the contracts that fill it (its buyer, the operator, regulators)."""
        async with self.sessions() as session:
            order = await session.get(Order, order_id)
            if order is None:
                raise UnknownFillSubjectError(f"no order {order_id}", field="id")
            _require_reader(who, order.buyer_id, f"order {order_id}")
            rows = await self._contracts(session, Contract.order_id == order_id)
        return {
            "order_id": order.id,
            "status": order.status,
            "quantity_devices": order.quantity_devices,
            "filled_devices": order.filled_devices,
            "contract_ids": [c.id for c in rows],
            "fills": [fill_view(c) for c in rows],
        }

    async def offer_fills(self, who: Viewer, offer_id: str) -> dict[str, Any]:
        """An offer's contracts and the devices still free on it now (its provider, operator, regulators)."""
        now = now_s()
        async with self.sessions() as session:
            offer = await session.get(Offer, offer_id)
            if offer is None:
                raise UnknownFillSubjectError(f"no offer {offer_id}", field="id")
            _require_reader(who, offer.provider_id, f"offer {offer_id}")
            rows = await self._contracts(session, Contract.offer_id == offer_id)
        held = sum(
            c.devices for c in rows if c.status not in RELEASED_CONTRACT_STATUSES and c.start_at <= now < c.end_at
        )
        return {
            "offer_id": offer.id,
            "status": offer.status,
            "devices": offer.devices,
            "reserved_devices_now": held,
            "free_devices_now": max(0, offer.devices - held) if offer.status == "open" else 0,
            "contract_ids": [c.id for c in rows],
            "fills": [fill_view(c) for c in rows],
        }

    async def _contracts(self, session: AsyncSession, where: Any) -> list[Contract]:
        q = select(Contract).where(where).order_by(Contract.start_at, Contract.id)
        return list((await session.execute(q)).scalars())

    async def market(self, viewer: Viewer | None = None) -> dict[str, Any]:
        """Depth (open demand, free offered devices) and last clearing prices by region x model family (prices
        only where enough orders contracted, except for the regulator and the operator: disclosure)."""
        return (await self.market_and_snapshot(viewer))[0]

    async def market_and_snapshot(self, viewer: Viewer | None = None) -> tuple[dict[str, Any], Market]:
        """The market view for `viewer` and the snapshot it was computed from (the web console shows both)."""
        async with self.sessions() as session:
            snap = await self.snapshot(session)
            last = await self._last_prices(session, aggregate_minimum(viewer, self.disclosure_min_orders))
        return market_view(snap, last, self.catalogue, self.regions), snap.market

    async def _last_prices(
        self, session: AsyncSession, min_orders: int, rounds: int = 50
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Per (region, family): the lowest posted price of the latest round in which at least
        `min_orders` orders contracted in that class (fewer would disclose their prices)."""
        recent = (
            select(RoundPrice.round_id, func.max(RoundPrice.cleared_at).label("at"))
            .group_by(RoundPrice.round_id)
            .order_by(func.max(RoundPrice.cleared_at).desc())
            .limit(rounds)
            .subquery()
        )
        q = (
            select(RoundPrice)
            .join(recent, and_(RoundPrice.round_id == recent.c.round_id))
            .order_by(RoundPrice.cleared_at.desc(), RoundPrice.round_id.desc())
        )
        counted = (
            select(Contract.round_id, Contract.region, Contract.model, func.count(func.distinct(Contract.order_id)))
            .where(Contract.round_id.in_(select(recent.c.round_id)))
            .group_by(Contract.round_id, Contract.region, Contract.model)
        )
        contracted: dict[tuple[str, str, str], int] = defaultdict(int)
        for round_id, region, model, n in (await session.execute(counted)).all():
            contracted[(str(round_id), region, self._family(model))] += int(n)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        latest_round: dict[tuple[str, str], str] = {}
        for p in (await session.execute(q)).scalars():
            key = (p.region, p.family)
            if not public_aggregate(contracted[(p.round_id, p.region, p.family)], min_orders):
                continue  # too few orders contracted in this class that round: its price would disclose them
            first = latest_round.setdefault(key, p.round_id)
            if first != p.round_id:
                continue
            price = Decimal(p.buyer_price)
            cur = out.get(key)
            if cur is None or price < Decimal(cur["price_fen_per_device_hour"]):
                out[key] = {
                    "price_fen_per_device_hour": str(price),
                    "min_ask_fen": p.min_ask_fen,
                    "model": p.model,
                    "round_id": p.round_id,
                    "cleared_at": p.cleared_at,
                }
        return out


def fill_view(c: Contract) -> dict[str, Any]:
    """A contract as a fill of an order or offer."""
    return {
        "contract_id": c.id,
        "round_id": c.round_id,
        "order_id": c.order_id,
        "offer_id": c.offer_id,
        "pool_id": c.pool_id,
        "model": c.model,
        "region": c.region,
        "devices": c.devices,
        "start_at": c.start_at,
        "end_at": c.end_at,
        "buyer_price_fen": c.buyer_price_fen,
        "provider_price_fen": c.provider_price_fen,
        "status": c.status,
    }


def _allowed_regions(order: Any, regions: RegionTable) -> set[str]:
    allowed = set(order.regions) if order.regions else set(regions.codes)
    if order.max_latency_ms is not None and order.home_region is not None and order.home_region in regions:
        allowed &= set(regions.within_latency(order.home_region, order.max_latency_ms))
    return allowed


def market_view(
    snap: Snapshot, last: dict[tuple[str, str], dict[str, Any]], catalogue: Catalogue, regions: RegionTable
) -> dict[str, Any]:
    """Rows per (region, family): free offered devices now, demand that could use them, last price."""
    market = snap.market
    offered: dict[tuple[str, str], int] = defaultdict(int)
    asks: dict[tuple[str, str], int] = {}
    for p in market.pools:
        if p.window_start is not None and p.window_start > market.now:
            continue
        held = sum(r.devices for r in p.reserved if r.start <= market.now < r.end)
        key = (p.region, p.family)
        offered[key] += max(0, p.devices - held)
        asks[key] = min(asks.get(key, p.ask_fen), p.ask_fen)
    demand: dict[tuple[str, str], int] = defaultdict(int)
    total_demand = 0
    for o in market.orders:
        families = {catalogue.get(code).family for code in o.models if code in catalogue}
        qty = o.quantity_devices or 0
        total_demand += qty
        for region in _allowed_regions(o, regions):
            for fam in families:
                demand[(region, fam)] += qty
    keys = sorted(set(offered) | set(last) | {k for k in demand if k in offered or k in last})
    rows = []
    for key in keys:
        region, family = key
        price = last.get(key)
        rows.append(
            {
                "region": region,
                "family": family,
                "offered_devices": offered.get(key, 0),
                "min_ask_fen": asks.get(key),
                "demand_devices": demand.get(key, 0),
                "last_price": price,
            }
        )
    return {
        "as_of": market.now,
        "open_orders": len(market.orders),
        "open_demand_devices": total_demand,
        "open_scu_orders": sum(1 for o in market.orders if o.quantity_scu is not None),
        "live_offers": len(market.pools),
        "offered_devices": sum(offered.values()),
        "classes": rows,
        "note": "demand_devices counts an order in every (region, family) it accepts; totals count it once",
    }
