"""Federated clearing: supply curves of several exchanges turned into one market, cleared by the same
engine, and the allocation routed back to the owning exchanges as hold requests.

A hub sees no pools, only each member's supply curve per (region, model): for every time slot an ask
ladder (devices offered at or below each ask). `curve_pools` turns a curve into synthetic pools, one per
distinct ask, whose per-slot availability is expressed as reservations, so the ordinary eligibility,
relaxation, gang repair and pricing apply unchanged. `clear_hub` clears the demand members could not
clear locally on those pools and answers `Route`s: which owner should hold how many devices of which
class for which order, at the class price the hub computed. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from matching.clearing import clear
from matching.eligibility import limit_for
from matching.model import ClearingResult, Market, Order, Pool, Reservation

SEP = "|"


@dataclass(frozen=True)
class ModelFacts:
    """What eligibility needs to know of a model (family, memory, SCU, software stack, domestic)."""

    family: str
    memory_gb: int
    scu: Decimal | None
    stack: str
    domestic: bool


@dataclass(frozen=True)
class SupplyCurve:
    """Free devices of one owner in one (region, model) class: per slot, an ascending ask ladder."""

    owner: str
    region: str
    model: str
    facts: ModelFacts
    max_pool_free: int
    slot_seconds: int
    # (slot start, ((ask fen per device-hour, devices at that ask), ...)) with asks ascending
    slots: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]

    def asks(self) -> list[int]:
        """The distinct asks of the curve, ascending."""
        return sorted({a for _, ladder in self.slots for a, n in ladder if n > 0})


@dataclass(frozen=True)
class Route:
    """Devices the hub asks `owner` to hold for `order_id` (of member `buyer_exchange`)."""

    order_id: str
    buyer_exchange: str
    owner: str
    region: str
    model: str
    devices: int
    start: int
    end: int
    buyer_price_fen: int
    provider_price_fen: int
    asks: tuple[int, ...] = ()  # the ladder steps (asks) the hub placed it on: the owner holds at those
    steps: tuple[tuple[int, int], ...] = ()  # (ask, devices) per ladder step, asks ascending


def pool_id(owner: str, region: str, model: str, ask: int) -> str:
    """Synthetic pool id of one ladder step (owner, class, ask)."""
    return SEP.join((owner, region, model, str(ask)))


def owner_of(pool: str) -> str:
    """Owner exchange of a synthetic pool id."""
    return pool.split(SEP, 1)[0]


def curve_pools(curve: SupplyCurve) -> list[Pool]:
    """One pool per distinct ask: devices = its largest per-slot count, slots with fewer held as reservations."""
    if not curve.slots:
        return []
    starts = [s for s, _ in curve.slots]
    first, last = min(starts), max(starts) + curve.slot_seconds
    out = []
    every = range(first, last, curve.slot_seconds)  # a slot missing from the curve has nothing free
    for ask in curve.asks():
        per_slot = dict.fromkeys(every, 0)
        for s, ladder in curve.slots:
            per_slot[s] += sum(n for a, n in ladder if a == ask)
        top = max(per_slot.values())
        reserved = tuple(
            Reservation(top - n, s, s + curve.slot_seconds) for s, n in sorted(per_slot.items()) if n < top
        )
        f = curve.facts
        out.append(
            Pool(
                id=pool_id(curve.owner, curve.region, curve.model, ask),
                site=f"{curve.owner}{SEP}{curve.region}",
                region=curve.region,
                model=curve.model,
                family=f.family,
                memory_gb=f.memory_gb,
                scu=f.scu,
                stack=f.stack,
                domestic=f.domestic,
                devices=top,
                devices_per_node=max(1, min(top, curve.max_pool_free)),
                ask_fen=ask,
                window_start=first,
                window_end=last,
                billing_modes=("reserved", "spot"),
                reserved=reserved,
            )
        )
    return out


def curves_of(owner: str, pools: Iterable[Pool], now: int, slot_seconds: int, horizon_slots: int) -> list[SupplyCurve]:
    """The supply curves an exchange publishes for its pools: free devices per slot (devices minus
    reservations overlapping the slot), by (region, model), as ask ladders."""
    slot0 = now - now % slot_seconds
    acc: dict[tuple[str, str], dict[int, dict[int, int]]] = {}
    facts: dict[tuple[str, str], ModelFacts] = {}
    biggest: dict[tuple[str, str], int] = {}
    for p in pools:
        key = (p.region, p.model)
        facts[key] = ModelFacts(p.family, p.memory_gb, p.scu, p.stack, p.domestic)
        by_slot = acc.setdefault(key, {})
        for k in range(horizon_slots):
            s = slot0 + k * slot_seconds
            e = s + slot_seconds
            if p.window_start is not None and s < p.window_start:
                continue
            if p.window_end is not None and e > p.window_end:
                continue
            held = sum(r.devices for r in p.reserved if r.start < e and r.end > s)
            free = max(0, p.devices - held)
            if free:
                ladder = by_slot.setdefault(s, {})
                ladder[p.ask_fen] = ladder.get(p.ask_fen, 0) + free
                biggest[key] = max(biggest.get(key, 0), free)
    out = []
    for key in sorted(acc):
        slots = tuple((s, tuple(sorted(lad.items()))) for s, lad in sorted(acc[key].items()))
        if slots:
            out.append(SupplyCurve(owner, key[0], key[1], facts[key], biggest[key], slot_seconds, slots))
    return out


def hub_market(
    curves: Sequence[SupplyCurve],
    orders: Sequence[Order],
    now: int,
    *,
    latency_ms: Mapping[str, Mapping[str, int]] | None = None,
    slot_seconds: int = 3600,
    max_start_slots: int = 4,
    fee_bps: int = 0,
    seed: int = 0,
) -> Market:
    """The market a hub clears: members' curves as pools, their unmet orders as orders. Curves carry no
    billing modes: every curve pool accepts the orders' modes (the owner checks its offers' at hold time)."""
    modes = tuple(sorted({"reserved", *(o.billing_mode for o in orders)}))
    pools = tuple(replace(p, billing_modes=modes) for c in curves for p in curve_pools(c))
    return Market(
        now=now,
        pools=pools,
        orders=tuple(orders),
        slot_seconds=slot_seconds,
        max_start_slots=max_start_slots,
        fee_bps=fee_bps,
        latency_ms={k: dict(v) for k, v in (latency_ms or {}).items()},
        seed=seed,
    )


def routes_of(result: ClearingResult, market: Market, buyer_exchange: Mapping[str, str]) -> list[Route]:
    """Allocations of a hub clearing, merged per (order, owner, class, window), as hold requests."""
    by_id = {p.id: p for p in market.pools}
    merged: dict[tuple[str, str, str, str, int, int], list[int]] = {}
    steps: dict[tuple[str, str, str, str, int, int], dict[int, int]] = {}
    for a in result.allocations:
        p = by_id[a.pool_id]
        key = (a.order_id, owner_of(a.pool_id), p.region, p.model, a.start, a.end)
        acc = merged.setdefault(key, [0, 0, 0])
        acc[0] += a.devices
        acc[1] += a.buyer_price_fen * a.devices
        acc[2] += a.provider_price_fen * a.devices
        at = steps.setdefault(key, {})
        at[p.ask_fen] = at.get(p.ask_fen, 0) + a.devices
    out = []
    for key, (n, buy, prov) in sorted(merged.items()):
        order_id, owner, region, model, start, end = key
        ladder = tuple(sorted(steps[key].items()))
        out.append(
            Route(order_id, buyer_exchange[order_id], owner, region, model, n, start, end, -(-buy // n), prov // n,
                  tuple(a for a, _n in ladder), ladder)
        )  # fmt: skip
    return out


def clear_hub(
    curves: Sequence[SupplyCurve],
    orders: Sequence[Order],
    buyer_exchange: Mapping[str, str],
    now: int,
    **market_kw: object,
) -> tuple[list[Route], ClearingResult]:
    """Clear members' unmet orders on members' supply curves; routes per owner and the clearing result."""
    market = hub_market(curves, orders, now, **market_kw)  # type: ignore[arg-type]
    result = clear(market)
    return routes_of(result, market, buyer_exchange), result


def routed_order(order: Order, routes: Sequence[Route], scu: Mapping[str, Decimal | None]) -> Order:
    """The order as its owner clears it: the routed devices on the routed models and regions, all or
    nothing, starting in the routed slot, at the buyer's own limits (the same welfare objective). An SCU
    order becomes the device count the hub converted it to, at its per-SCU limit times the model's SCU."""
    devices = sum(r.devices for r in routes)
    models = tuple(sorted({r.model for r in routes}))
    regions = tuple(sorted({r.region for r in routes}))
    start = min(r.start for r in routes)
    limits: dict[str, int] = {}
    for m in models:
        lim = limit_for(order, m, scu.get(m))
        if lim is not None:
            limits[m] = lim
    return replace(
        order,
        quantity_devices=devices,
        quantity_scu=None,
        limit_fen_per_scu_hour=None,
        models=models,
        regions=regions,
        all_or_nothing=True,
        min_fill_devices=devices,
        max_pools=max(order.max_pools, len(routes)),
        start_earliest=start,
        start_latest=start,
        limits=limits,
    )
