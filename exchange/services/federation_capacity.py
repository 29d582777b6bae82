"""Free capacity at this exchange: live offers minus reservations (contracts AND unexpired federation holds),
the immediate pay-as-ask matching used for forwarded orders, and the capacity lock every seller takes.

A pool is never sold twice: every writer that turns capacity into a reservation (clearing rounds creating
contracts, federation creating holds) first calls `lock_capacity(session)` in its transaction and then
reads `reserved_devices`, which counts contracts that are not cancelled and holds that are still `held`
and unexpired. On SQLite, BEGIN IMMEDIATE already serializes writers; on PostgreSQL the lock is a
transaction-scoped advisory lock with a fixed key (rounds must take the same one).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.storage.contracts import Contract
from exchange.storage.federation import FederationHold, FederationHoldLine, OutboundHold
from exchange.storage.registration import Offer, Pool, Site
from federation.peering import CapacityClass

CAPACITY_LOCK_KEY = 0x6865_7465_7843_6170  # "hetexCap": pg_advisory_xact_lock key shared by every seller
SUMMARY_HORIZON_SECONDS = 3600
IN_FLIGHT_STATUSES = ("requested", "held", "committing")


async def lock_capacity(session: AsyncSession) -> None:
    """Serialize capacity writers for the rest of the caller's transaction (PostgreSQL advisory lock)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CAPACITY_LOCK_KEY % (1 << 63)})


async def reserved_devices(
    session: AsyncSession, pool_ids: Iterable[str], start: int, end: int, now: int
) -> dict[str, int]:
    """Devices of each pool reserved at some time in [start, end): live contracts plus unexpired holds
    (a conservative sum over the span, so an overlap is never oversold)."""
    ids = sorted(set(pool_ids))
    out: dict[str, int] = defaultdict(int)
    if not ids:
        return out
    rows = await session.execute(
        select(Contract.pool_id, func.sum(Contract.devices))
        .where(
            Contract.pool_id.in_(ids),
            Contract.status != "cancelled",
            Contract.start_at < end,
            Contract.end_at > start,
        )
        .group_by(Contract.pool_id)
    )
    for pool_id, n in rows:
        out[pool_id] += int(n or 0)
    rows = await session.execute(
        select(FederationHoldLine.pool_id, func.sum(FederationHoldLine.devices))
        .join(FederationHold, FederationHold.id == FederationHoldLine.hold_id)
        .where(
            FederationHoldLine.pool_id.in_(ids),
            FederationHold.status == "held",
            FederationHold.expires_at > now,
            FederationHoldLine.start_at < end,
            FederationHoldLine.end_at > start,
        )
        .group_by(FederationHoldLine.pool_id)
    )
    for pool_id, n in rows:
        out[pool_id] += int(n or 0)
    return out


async def held_lines(session: AsyncSession, pool_ids: Iterable[str], now: int) -> list[FederationHoldLine]:
    """Hook for clearing rounds: unexpired federation hold lines on these pools (count them as reservations)."""
    ids = sorted(set(pool_ids))
    if not ids:
        return []
    rows = await session.scalars(
        select(FederationHoldLine)
        .join(FederationHold, FederationHold.id == FederationHoldLine.hold_id)
        .where(
            FederationHoldLine.pool_id.in_(ids),
            FederationHold.status == "held",
            FederationHold.expires_at > now,
            FederationHoldLine.end_at > now,
        )
    )
    return list(rows)


def orders_in_flight() -> Any:
    """Hook for clearing rounds: a subquery of local order ids a peer is holding capacity for right now
    (a round must not clear them too: the federation commit would fill them twice)."""
    return select(OutboundHold.order_id).where(OutboundHold.status.in_(IN_FLIGHT_STATUSES))


@dataclass(frozen=True)
class Tranche:
    """Free devices of one offer on one pool, at the offer's ask."""

    pool_id: str
    pool_cri: str
    offer_id: str
    provider_id: str
    region: str
    model: str
    ask_fen: int
    devices: int
    billing_modes: tuple[str, ...]
    min_lease_seconds: int
    site_id: str = ""


async def free_tranches(
    session: AsyncSession,
    *,
    start: int,
    end: int,
    now: int,
    heartbeat_timeout: int,
    models: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
) -> list[Tranche]:
    """Free capacity for [start, end) by offer: each pool's free devices (its devices capped by open offers,
    minus reservations) are assigned to its offers cheapest first, reservations consuming the cheapest."""
    stmt = (
        select(Offer, Pool, Site)
        .join(Pool, Pool.id == Offer.pool_id)
        .join(Site, Site.id == Pool.site_id)
        .where(
            Offer.status == "open",
            Pool.status == "active",
            Site.status == "active",
            Site.last_heartbeat_at >= now - heartbeat_timeout,
            Offer.window_start <= start,
            or_(Offer.window_end.is_(None), Offer.window_end >= end),
        )
    )
    if models is not None:
        stmt = stmt.where(Pool.model.in_(list(models)))
    if regions is not None:
        stmt = stmt.where(Site.region.in_(list(regions)))
    rows = (await session.execute(stmt)).all()
    by_pool: dict[str, list[tuple[Offer, Pool, Site]]] = defaultdict(list)
    for offer, pool, site in rows:
        by_pool[pool.id].append((offer, pool, site))
    reserved = await reserved_devices(session, by_pool, start, end, now)
    out: list[Tranche] = []
    for pool_id, items in by_pool.items():
        items.sort(key=lambda t: (t[0].ask_fen, t[0].id))
        pool = items[0][1]
        capacity = min(pool.devices, sum(o.devices for o, _p, _s in items))
        taken = reserved.get(pool_id, 0)
        left = max(0, capacity - taken)
        for offer, pool, site in items:
            use_reserved = min(taken, offer.devices)
            taken -= use_reserved
            free = min(offer.devices - use_reserved, left)
            if free <= 0:
                continue
            left -= free
            out.append(
                Tranche(
                    pool_id=pool.id,
                    pool_cri=pool.cri,
                    offer_id=offer.id,
                    provider_id=site.provider_id,
                    region=site.region,
                    model=pool.model,
                    ask_fen=int(offer.ask_fen),
                    devices=free,
                    billing_modes=tuple(offer.billing_modes or ()),
                    min_lease_seconds=int(offer.min_lease_seconds),
                    site_id=site.id,
                )
            )
    out.sort(key=lambda t: (t.ask_fen, t.pool_cri, t.offer_id))
    return out


def summarize(tranches: Iterable[Tranche]) -> tuple[CapacityClass, ...]:
    """Capacity classes (region, model) with free devices, largest single pool and the ask ladder."""
    devices: dict[tuple[str, str], int] = defaultdict(int)
    per_pool: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    ladder: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for t in tranches:
        key = (t.region, t.model)
        devices[key] += t.devices
        per_pool[key][t.pool_id] += t.devices
        ladder[key][t.ask_fen] += t.devices
    return tuple(
        CapacityClass(
            region=region,
            model=model,
            free_devices=devices[(region, model)],
            max_pool_free=max(per_pool[(region, model)].values()),
            ask_ladder=tuple(sorted(ladder[(region, model)].items())),
        )
        for region, model in sorted(devices)
    )


def limit_for(limits: Mapping[str, int], model: str) -> int | None:
    """The buyer's limit (fen per device-hour) for `model`: its own entry, else '*', else None."""
    value = limits.get(model, limits.get("*"))
    return None if value is None else int(value)


@dataclass(frozen=True)
class Shape:
    """How a forwarded order may be placed (the order spec's max_pools, same_model, colocation and
    quantity_scu): at most `max_pools` pools, one model, one site or one region, and for an SCU order the
    device count per model from the catalogue SCU (`scu`), always on one model as local clearing does."""

    max_pools: int | None = None
    same_model: bool = False
    colocation: str = "any"
    quantity_scu: Decimal | None = None
    scu_min: Decimal | None = None
    scu: Mapping[str, Decimal | None] = field(default_factory=dict)

    @property
    def one_model(self) -> bool:
        """True when every device must be of one model (same_model, or an SCU order)."""
        return self.same_model or self.quantity_scu is not None

    def group_key(self, t: Tranche) -> tuple[str, ...]:
        """The placement group of a tranche: its site or region (colocation) and its model (one model)."""
        key: tuple[str, ...] = ()
        if self.colocation == "site":
            key += (t.site_id,)
        elif self.colocation == "region":
            key += (t.region,)
        if self.one_model:
            key += (t.model,)
        return key


def _ceil_div(a: Decimal, b: Decimal) -> int:
    """ceil(a / b) for Decimals (their // truncates toward zero, so -(-a // b) would round down)."""
    return int((a / b).to_integral_value(rounding=ROUND_CEILING))


def _greedy(tranches: Sequence[Tranche], want: int, max_pools: int | None) -> list[tuple[Tranche, int]]:
    """Cheapest tranches first up to `want` devices, opening at most `max_pools` pools."""
    picked: list[tuple[Tranche, int]] = []
    pools: set[str] = set()
    total = 0
    for t in tranches:
        if total >= want:
            break
        if t.pool_id not in pools and max_pools is not None and len(pools) >= max_pools:
            continue
        n = min(t.devices, want - total)
        picked.append((t, n))
        pools.add(t.pool_id)
        total += n
    return picked


def _fill(tranches: Sequence[Tranche], want: int, max_pools: int | None) -> list[tuple[Tranche, int]]:
    """The better of cheapest-first and largest-pools-first (when pools are capped): more devices, then
    lower cost."""
    options = [_greedy(tranches, want, max_pools)]
    if max_pools is not None:
        free: dict[str, int] = defaultdict(int)
        for t in tranches:
            free[t.pool_id] += t.devices
        biggest = set(sorted(free, key=lambda p: (-free[p], p))[:max_pools])
        options.append(_greedy([t for t in tranches if t.pool_id in biggest], want, max_pools))
    return max(options, key=lambda ps: (sum(n for _t, n in ps), -sum(t.ask_fen * n for t, n in ps)))


def choose(
    tranches: Iterable[Tranche],
    *,
    devices_max: int,
    devices_min: int,
    limits: Mapping[str, int],
    models: Sequence[str] | None,
    regions: Sequence[str] | None,
    billing_mode: str,
    duration: int,
    shape: Shape | None = None,
) -> list[tuple[Tranche, int]]:
    """Immediate pay-as-ask matching: cheapest acceptable tranches first, up to `devices_max`, within the
    order's shape (pool cap, one model, one site/region; SCU converted per model and capped by
    `devices_max`); the placement group filling the most (devices, or SCU), then the cheapest, wins; nothing
    at all when fewer than `devices_min` devices (or `shape.scu_min` SCU) can be had."""
    shape = shape or Shape()
    groups: dict[tuple[str, ...], list[Tranche]] = defaultdict(list)
    for t in sorted(tranches, key=lambda t: (t.ask_fen, t.pool_cri, t.offer_id)):
        if models is not None and t.model not in models:
            continue
        if regions is not None and t.region not in regions:
            continue
        limit = limit_for(limits, t.model)
        if limit is None or t.ask_fen > limit:
            continue
        if t.billing_modes and billing_mode not in t.billing_modes:
            continue
        if duration < t.min_lease_seconds:
            continue
        if shape.quantity_scu is not None and not (shape.scu.get(t.model) or 0) > 0:
            continue  # an SCU order needs the model's catalogue SCU
        groups[shape.group_key(t)].append(t)
    best: tuple[tuple[Decimal, int, tuple[str, ...]], list[tuple[Tranche, int]]] | None = None
    for key, group in groups.items():
        want, floor, per_device = devices_max, devices_min, Decimal(1)
        if shape.quantity_scu is not None:
            per_device = Decimal(shape.scu[group[0].model] or 0)
            want = min(devices_max, _ceil_div(shape.quantity_scu, per_device))
            floor = max(1, _ceil_div(shape.scu_min or shape.quantity_scu, per_device))
        picks = _fill(group, want, shape.max_pools)
        total = sum(n for _t, n in picks)
        if total <= 0 or total < floor:
            continue
        value = total * per_device
        if shape.quantity_scu is not None:
            value = min(value, shape.quantity_scu)
        rank = (-value, sum(t.ask_fen * n for t, n in picks), key)
        if best is None or rank < best[0]:
            best = (rank, picks)
    return [] if best is None else best[1]


def refusal_field(
    tranches: Sequence[Tranche],
    *,
    devices_max: int,
    devices_min: int,
    limits: Mapping[str, int],
    models: Sequence[str] | None,
    regions: Sequence[str] | None,
    billing_mode: str,
    duration: int,
    shape: Shape,
) -> str | None:
    """Why `choose` found nothing, as the order field to blame: the shape field whose relaxation alone
    would fill (colocation, same_model, max_pools), `quantity_scu` when no acceptable model has a catalogue
    SCU, or None when there is simply not enough acceptable capacity."""
    common: dict[str, Any] = {
        "devices_max": devices_max, "devices_min": devices_min, "limits": limits, "models": models,
        "regions": regions, "billing_mode": billing_mode, "duration": duration,
    }  # fmt: skip
    if shape.quantity_scu is not None and not any(
        (shape.scu.get(m) or 0) > 0 for m in (models if models is not None else {t.model for t in tranches})
    ):
        return "quantity_scu"
    relaxed = (
        ("colocation", Shape(shape.max_pools, shape.same_model, "any", shape.quantity_scu, shape.scu_min, shape.scu)),
        ("same_model", Shape(shape.max_pools, False, shape.colocation, shape.quantity_scu, shape.scu_min, shape.scu)),
        ("max_pools", Shape(None, shape.same_model, shape.colocation, shape.quantity_scu, shape.scu_min, shape.scu)),
    )
    for name, other in relaxed:
        if other != shape and choose(tranches, shape=other, **common):
            return name
    return None
