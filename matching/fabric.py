"""A generated national market split over member exchanges, and the three ways to clear it that
`hetex bench federation` compares: one merged market, the hub (local rounds, then the hub clears the
unmet demand on members' supply curves, then each owner confirms in an optimizer mini-round), and
today's greedy forwarding (local rounds, then each unmet device order goes to the peer with the best
ask, which fills it cheapest-first, pay-as-ask). Pure: the HTTP run in exchange/bench/federation.py
uses the same market and the same welfare accounting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from matching.clearing import clear
from matching.federated import Route, SupplyCurve, clear_hub, curves_of, routed_order
from matching.generators import MODELS, NOW, _Gen, scu_of
from matching.model import Allocation, Market, Order, Pool, Reservation

EAST = ("CN-SH", "CN-BJ", "CN-GD", "CN-JS", "CN-ZJ", "CN-TJ")
WEST = ("CN-NM", "CN-GZ", "CN-GS", "CN-NX", "CN-SC", "CN-CQ")
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Fabric:
    """A national market: the merged snapshot and which member exchange owns each pool and order."""

    market: Market
    members: tuple[str, ...]
    regions: Mapping[str, tuple[str, ...]]  # member -> its regions
    pool_owner: Mapping[str, str]
    order_owner: Mapping[str, str]

    def member_market(self, member: str, pools: Iterable[Pool] | None = None) -> Market:
        """The member's own market (its pools, or `pools`, and its orders)."""
        ps = tuple(p for p in (self.market.pools if pools is None else pools) if self.pool_owner[p.id] == member)
        os_ = tuple(o for o in self.market.orders if self.order_owner[o.id] == member)
        return replace(self.market, pools=ps, orders=os_)


def national(members: int, orders: int, pools: int, seed: int, *, scu_share: float = 0.1) -> Fabric:
    """`members` exchanges alternating east (demand heavy: 85% of orders, 20% of pools) and west
    (supply heavy), mixed architectures, device and SCU orders, leases of 1-4 h, no residency rules."""
    if members < 2:
        raise ValueError("a national market needs at least two member exchanges")
    g = _Gen(seed)
    rng = g.rng
    names = tuple(f"X{i + 1}" for i in range(members))
    east = [m for i, m in enumerate(names) if i % 2 == 0]
    west = [m for i, m in enumerate(names) if i % 2 == 1]
    regions = {m: (EAST[i % len(EAST)],) for i, m in enumerate(east)}
    regions.update({m: (WEST[i % len(WEST)],) for i, m in enumerate(west)})
    n_east_pools = max(len(east), int(pools * 0.2))
    raw = g.pools(pools, reserved_share=0.1)
    ps: list[Pool] = []
    pool_owner: dict[str, str] = {}
    for i, p in enumerate(raw):
        side = east if i < n_east_pools else west
        m = side[i % len(side)]
        region = regions[m][0]
        pid = f"{m}-P{i:05d}"
        ps.append(replace(p, id=pid, region=region, site=f"{m}-{p.site}"))
        pool_owner[pid] = m
    os_: list[Order] = []
    order_owner: dict[str, str] = {}
    scu_models = [s.code for s in MODELS if scu_of(s) is not None]
    for i in range(orders):
        side = east if rng.random() < 0.85 else west
        m = side[int(rng.integers(0, len(side)))]
        o = g.order(i, residency=0.0, latency_share=0.0, durations=(1, 1, 2, 4))
        o = replace(o, id=f"{m}-O{i:06d}", buyer=f"{m}-{o.buyer}", home_region=regions[m][0], max_latency_ms=None)
        if rng.random() < scu_share:
            acceptable = tuple(sorted(x for x in o.models if x in scu_models)) or (scu_models[0],)
            spec = next(s for s in MODELS if s.code == acceptable[0])
            per_scu = int(spec.ask_fen / float(scu_of(spec) or 1) * float(rng.uniform(1.1, 1.6)))
            o = replace(
                o,
                quantity_devices=None,
                quantity_scu=Decimal(int(rng.choice([1, 2, 4]))),
                models=acceptable,
                limits={},
                limit_fen_per_scu_hour=per_scu,
            )
        os_.append(o)
        order_owner[o.id] = m
    market = Market(now=NOW, pools=tuple(ps), orders=tuple(os_), latency_ms=g.lat, seed=seed, fee_bps=0)
    return Fabric(market, names, regions, pool_owner, order_owner)


def reserve(pools: Sequence[Pool], allocations: Iterable[Allocation]) -> list[Pool]:
    """Pools with each allocation added as a reservation (what is left after a round)."""
    extra: dict[str, list[Reservation]] = {}
    for a in allocations:
        extra.setdefault(a.pool_id, []).append(Reservation(a.devices, a.start, a.end))
    return [replace(p, reserved=p.reserved + tuple(extra[p.id])) if p.id in extra else p for p in pools]


@dataclass
class Outcome:
    """Welfare, fills and peer messages of one way of clearing a fabric."""

    welfare_fen: int = 0
    filled_orders: int = 0
    filled_devices: int = 0
    forwarded_orders: int = 0
    federated_fills: int = 0
    peer_messages: int = 0
    refused_holds: int = 0
    allocations: list[Allocation] = field(default_factory=list)


def _local(fabric: Fabric, out: Outcome) -> tuple[dict[str, list[Pool]], list[Order]]:
    """Every member clears its own market; answers the members' pools left and the unfilled orders."""
    left: dict[str, list[Pool]] = {}
    unmet: list[Order] = []
    for m in fabric.members:
        mk = fabric.member_market(m)
        res = clear(mk)
        out.welfare_fen += res.stats.welfare_fen
        out.filled_orders += res.stats.matched_orders
        out.filled_devices += res.stats.matched_devices
        out.allocations.extend(res.allocations)
        left[m] = reserve(mk.pools, res.allocations)
        filled = {a.order_id for a in res.allocations}
        unmet.extend(o for o in mk.orders if o.id not in filled)
    return left, unmet


def clear_merged(fabric: Fabric) -> Outcome:
    """(a) One exchange that sees every order and every pool."""
    res = clear(fabric.market)
    return Outcome(
        res.stats.welfare_fen, res.stats.matched_orders, res.stats.matched_devices, allocations=list(res.allocations)
    )


def member_curves(fabric: Fabric, left: Mapping[str, Sequence[Pool]], horizon_slots: int) -> list[SupplyCurve]:
    """Every member's supply curves over its pools left after the local round."""
    m = fabric.market
    return [c for mem in fabric.members for c in curves_of(mem, left[mem], m.now, m.slot_seconds, horizon_slots)]


def horizon_of(market: Market) -> int:
    """Slots a summary must cover: the longest lease plus the start slots a round may choose."""
    longest = max((-(-o.duration_seconds // market.slot_seconds) for o in market.orders), default=1)
    return longest + market.max_start_slots


def confirm(
    fabric: Fabric, owner: str, pools: Sequence[Pool], orders: Sequence[Order]
) -> tuple[list[Allocation], int, set[str]]:
    """The owner's mini-round on routed orders against its live pools (same engine, same objective):
    allocations, welfare and the orders it confirmed."""
    if not orders:
        return [], 0, set()
    res = clear(replace(fabric.market, pools=tuple(pools), orders=tuple(orders)))
    return list(res.allocations), res.stats.welfare_fen, {a.order_id for a in res.allocations}


def clear_hub_fabric(fabric: Fabric, progress: Progress | None = None, *, coupled: bool = True) -> Outcome:
    """(b) Through a hub. Coupled (the default): every member sends its open orders and the supply curves
    of all its free capacity; the hub clears them in one round and routes each allocation to the owning
    exchange (the buyer's own exchange for a local one), which confirms in an optimizer mini-round.
    Residual (`coupled=False`): members clear locally first and send only what stayed unfilled, with the
    curves of what is left."""
    out = Outcome()
    if coupled:
        left = {m: list(fabric.member_market(m).pools) for m in fabric.members}
        demand = list(fabric.market.orders)
    else:
        left, demand = _local(fabric, out)
    if progress:
        progress("hub: member summaries", 0.3)
    curves = member_curves(fabric, left, horizon_of(fabric.market))
    out.peer_messages += len(fabric.members) * 2  # one summary and one demand batch per member per round
    routes, _ = clear_hub(
        curves,
        demand,
        fabric.order_owner,
        fabric.market.now,
        latency_ms=fabric.market.latency_ms,
        slot_seconds=fabric.market.slot_seconds,
        max_start_slots=fabric.market.max_start_slots,
    )
    out.peer_messages += len(fabric.members)  # the routes, one batch per member
    if progress:
        progress("hub: owners confirm", 0.7)
    out.forwarded_orders = sum(
        1 for o in demand if any(r.order_id == o.id and r.owner != r.buyer_exchange for r in routes)
    )
    out.federated_fills = apply_routes(fabric, left, demand, routes, out)
    return out


def apply_routes(
    fabric: Fabric, left: dict[str, list[Pool]], unmet: Sequence[Order], routes: Sequence[Route], out: Outcome
) -> int:
    """Owners confirm routed holds in one mini-round each; an order not confirmed by every owner it was
    routed to is released everywhere (all-or-nothing, as two-phase commits do). Answers the orders filled
    across exchanges."""
    by_order: dict[str, list[Route]] = {}
    for r in routes:
        by_order.setdefault(r.order_id, []).append(r)
    orders = {o.id: o for o in unmet}
    scu = {p.model: p.scu for p in fabric.market.pools}
    per_owner: dict[str, list[Order]] = {}
    for oid, rs in by_order.items():
        for owner in sorted({r.owner for r in rs}):
            mine = [r for r in rs if r.owner == owner]
            o = routed_order(orders[oid], mine, scu)
            per_owner.setdefault(owner, []).append(replace(o, id=f"{oid}@{owner}"))
    confirmed: dict[str, list[Allocation]] = {}
    for owner, os_ in sorted(per_owner.items()):
        allocs, _w, ok = confirm(fabric, owner, left[owner], os_)
        out.peer_messages += sum(
            1 for o in os_ if fabric.order_owner[o.id.rsplit("@", 1)[0]] != owner
        )  # one hold request per (order, other owner)
        for a in allocs:
            confirmed.setdefault(a.order_id, []).append(a)
        out.refused_holds += len(os_) - len(ok)
    filled = 0
    for oid in sorted(by_order):
        owners = sorted({r.owner for r in by_order[oid]})
        keys = [f"{oid}@{w}" for w in owners]
        buyer = fabric.order_owner[oid]
        n_remote = sum(1 for w in owners if w != buyer)
        if all(k in confirmed for k in keys):
            filled += 1 if n_remote else 0
            out.peer_messages += n_remote  # one commit per other owner
            for k, w in zip(keys, owners, strict=True):
                left[w] = reserve(left[w], confirmed[k])
                out.allocations.extend(replace(a, order_id=oid) for a in confirmed[k])
            out.welfare_fen += order_welfare(fabric.market, orders[oid], [a for k in keys for a in confirmed[k]])
            out.filled_orders += 1
            out.filled_devices += sum(a.devices for k in keys for a in confirmed[k])
        else:
            out.peer_messages += sum(1 for k, w in zip(keys, owners, strict=True) if k in confirmed and w != buyer)
    return filled


def order_welfare(market: Market, order: Order, allocations: Iterable[Allocation]) -> int:
    """Welfare of an order's allocations: (buyer limit - ask) x devices x hours, in fen."""
    from matching.eligibility import limit_for

    pools = {p.id: p for p in market.pools}
    units = 0
    for a in allocations:
        p = pools[a.pool_id]
        lim = limit_for(order, p.model, p.scu) or 0
        units += (lim - p.ask_fen) * a.devices * (a.end - a.start)
    return units // 3600


def clear_greedy_fabric(fabric: Fabric, progress: Progress | None = None) -> Outcome:
    """(c) Today's forwarding: local rounds, then each unmet device order, in arrival order, to the peer
    whose summary has the best ask that could fill it; the owner fills it at once, cheapest first."""
    out = Outcome()
    left, unmet = _local(fabric, out)
    horizon = horizon_of(fabric.market)
    for i, o in enumerate(unmet):
        if progress and i % 50 == 0:
            progress("greedy forwarding", 0.4 + 0.6 * i / max(1, len(unmet)))
        if o.quantity_scu is not None:
            continue  # SCU orders are not forwarded today
        out.forwarded_orders += 1
        buyer = fabric.order_owner[o.id]
        ranked = []
        for m in fabric.members:
            if m == buyer:
                continue
            best = _best_ask(curves_of(m, left[m], fabric.market.now, fabric.market.slot_seconds, horizon), o)
            if best is not None:
                ranked.append((best, m))
        for _, m in sorted(ranked):
            out.peer_messages += 1  # order_offer
            res = clear(replace(fabric.market, pools=tuple(left[m]), orders=(o,)), method="greedy", prices=False)
            if res.allocations:
                out.peer_messages += 1  # hold_commit
                left[m] = reserve(left[m], res.allocations)
                out.allocations.extend(res.allocations)
                out.welfare_fen += res.stats.welfare_fen
                out.filled_orders += 1
                out.filled_devices += res.stats.matched_devices
                out.federated_fills += 1
                break
    return out


def _best_ask(curves: Sequence[SupplyCurve], order: Order) -> int | None:
    """Lowest ask in the first slot among acceptable classes with enough free devices (today's `fillable`)."""
    need = order.quantity_devices or 1
    best = None
    for c in curves:
        lim = order.limits.get(c.model)
        if lim is None or (order.regions and c.region not in order.regions):
            continue
        first = c.slots[0][1] if c.slots else ()
        if sum(n for a, n in first if a <= lim) < need:
            continue
        ask = first[0][0]
        best = ask if best is None else min(best, ask)
    return best
