"""The owner's clearing of a forwarded device order: a mini-round of the local rounds' engine
(matching.clearing.clear: welfare objective, gang and shape rules, minimum equilibrium prices with the
exchange fee) on the owner's free tranches, so a peer's order is placed and priced by the same rule as a
local order (specs/federation.md section 4), not cheapest-first at the ask.

Time is shifted to 0 (one slot the length of the lease, starting at 0): the hold is for exactly the
window the buyer's exchange asked for, and prices are per device-hour, so nothing depends on the grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from exchange.services.federation.wire import ForwardedOrder
from exchange.services.federation_capacity import Shape, Tranche, limit_for
from matching.clearing import clear
from matching.errors import MarketError
from matching.model import Market, Order, Pool


def owner_round(
    tranches: Sequence[Tranche],
    order: ForwardedOrder,
    shape: Shape,
    *,
    fee_bps: int,
    scu: Mapping[str, Decimal | None],
) -> list[tuple[Tranche, int, int, int]]:
    """(tranche, devices, buyer price, provider price) of the forwarded order cleared against `tranches`
    (fen per device-hour); empty when it does not clear (nothing acceptable, or fewer than devices_min)."""
    duration = order.end_at - order.start_at
    usable: list[Tranche] = []
    limits: dict[str, int] = {}
    for t in tranches:
        if order.models is not None and t.model not in order.models:
            continue
        if order.regions is not None and t.region not in order.regions:
            continue
        limit = limit_for(order.limits, t.model)
        if limit is None:
            continue
        limits[t.model] = limit
        usable.append(t)
    if not usable:
        return []
    pools = tuple(
        Pool(
            id=str(i),
            site=t.site_id or t.pool_id,
            region=t.region,
            model=t.model,
            family="",
            memory_gb=0,
            scu=scu.get(t.model),
            stack="",
            domestic=False,
            devices=t.devices,
            devices_per_node=t.devices,
            ask_fen=t.ask_fen,
            min_lease_seconds=t.min_lease_seconds,
            billing_modes=t.billing_modes or (order.billing_mode,),
        )
        for i, t in enumerate(usable)
    )
    demand = Order(
        id="forwarded",
        buyer=order.buyer_id,
        seq=0,
        quantity_devices=order.devices_max,
        models=tuple(sorted(limits)),
        regions=tuple(sorted({t.region for t in usable})),
        all_or_nothing=order.devices_min >= order.devices_max,
        min_fill_devices=order.devices_min,
        max_pools=shape.max_pools or len(pools),
        same_model=shape.same_model,
        colocation=shape.colocation,
        duration_seconds=duration,
        start_earliest=0,
        start_latest=0,
        limits=limits,
        billing_mode=order.billing_mode,
    )
    market = Market(now=0, pools=pools, orders=(demand,), slot_seconds=duration, max_start_slots=1, fee_bps=fee_bps)
    try:
        result = clear(market)
    except MarketError:
        return []
    got = sum(a.devices for a in result.allocations)
    if got < order.devices_min:
        return []
    merged: dict[int, tuple[int, int, int]] = {}
    for a in result.allocations:  # one line per tranche (a pool's nodes are not separate holds)
        i = int(a.pool_id)
        had = merged.get(i, (0, a.buyer_price_fen, a.provider_price_fen))
        merged[i] = (had[0] + a.devices, max(had[1], a.buyer_price_fen), min(had[2], a.provider_price_fen))
    return [(usable[i], n, buy, sell) for i, (n, buy, sell) in sorted(merged.items())]
