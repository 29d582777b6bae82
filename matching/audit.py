"""Audit run on every clearing: individual rationality on both sides, no envy for losers at the posted
prices, exact budget balance in fen, and the physical rules (capacity per slot, K pools, fills, single-node
gangs each on one node of their pool that holds them, node capacity per slot)."""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction

import numpy as np

from matching.eligibility import Prepared, limit_for
from matching.model import Audit, AuditCheck
from matching.prices import Duals, PricedPiece
from matching.relaxation import Network

MAX_DETAILS = 20


def audit(
    prep: Prepared,
    priced: list[PricedPiece],
    pieces_pool: list[int],
    net: Network | None,
    duals: Duals | None,
    pricing_rule: str,
    *,
    prices_wanted: bool = False,
) -> Audit:
    """Check a priced allocation; counts violations per named check (0 everywhere when all is well).

    When prices were wanted but the price LP did not finish (work limit or failure), no-envy cannot be
    checked: the `prices` check then counts one violation, so the audit is not ok."""
    mk = prep.market
    slot = prep.slot_seconds
    ir_b = ir_p = 0
    balanced = True
    fee_total = 0
    uplift = 0
    fee_short = 0
    used = np.zeros_like(prep.free)
    by_order: dict[str, list[int]] = defaultdict(list)
    o_ix = {o.id: i for i, o in enumerate(mk.orders)}
    for n, pp in enumerate(priced):
        a = pp.alloc
        p = pieces_pool[n]
        pool = mk.pools[p]
        oi = o_ix[a.order_id]
        order = mk.orders[oi]
        q_3600 = a.devices * (a.end - a.start)  # device-hours x 3600
        lim = limit_for(order, pool.model, pool.scu)
        if lim is None or a.buyer_price_fen > lim or a.buyer_pays * 3600 > lim * q_3600:
            ir_b += 1
        if a.provider_price_fen < pool.ask_fen or a.provider_receives * 3600 < pool.ask_fen * q_3600:
            ir_p += 1
        if a.buyer_pays != a.provider_receives + a.fee or a.fee < 0:
            balanced = False
        fee_total += a.fee
        fee_short += max(0, pp.fee_target - a.fee)
        uplift += pp.uplift
        k = (a.start - prep.slot0) // slot
        L = (a.end - a.start) // slot
        used[p, k : k + L] += a.devices
        by_order[a.order_id].append(n)
    over = int((used > prep.free).sum())
    node_bad = _node_fit(prep, priced, pieces_pool, o_ix)
    # order shape: K pools, all-or-nothing / min fill, same model, co-location, one start
    shape = 0
    for oid, ns in by_order.items():
        order = mk.orders[o_ix[oid]]
        allocs = [priced[n].alloc for n in ns]
        pools = [mk.pools[pieces_pool[n]] for n in ns]
        devs = sum(a.devices for a in allocs)
        bad = len(allocs) > order.max_pools or len({a.start for a in allocs}) != 1
        if order.quantity_devices is not None:
            if order.all_or_nothing and devs != order.quantity_devices:
                bad = True
            need = min(order.quantity_devices, order.min_fill_devices)
            if not order.all_or_nothing and not need <= devs <= order.quantity_devices:
                bad = True
        else:
            scu = pools[0].scu
            delivered = sum(a.devices for a in allocs) * (scu or 0)
            if order.all_or_nothing and (scu is None or delivered < (order.quantity_scu or 0)):
                bad = True
        if (order.same_model or order.quantity_scu is not None) and len({p.model for p in pools}) > 1:
            bad = True
        if order.colocation == "site" and len({p.site for p in pools}) > 1:
            bad = True
        if order.colocation == "region" and len({p.region for p in pools}) > 1:
            bad = True
        shape += bad
    # no envy: a loser whose limit exceeds the posted price of a group it could use
    envy = 0
    details: list[str] = []
    if net is not None and duals is not None and duals.ok:
        posted: dict[int, tuple[Fraction, int]] = {}  # group -> (price per device-hour, floor(price + 1))
        for oi, order in enumerate(mk.orders):
            if order.id in by_order:
                continue
            for e in prep.order_edges[oi]:
                j = int(net.e_group[e])
                if j < 0:
                    continue
                if j not in posted:
                    price = Fraction(repr(float(duals.pi[j]))) / Fraction(int(net.g_lease[j]) * slot, 3600)
                    posted[j] = (price, _floor(price + 1))
                price, most = posted[j]
                lim = int(prep.e_limit[e])
                if lim > most:  # lim > price + 1 (1 fen per device-hour of rounding tolerance); lim is whole
                    envy += 1
                    if len(details) < MAX_DETAILS:
                        details.append(f"{order.id}: limit {lim} > posted {float(price):.2f} in group {j}")
                    break
    checks = (
        AuditCheck("ir_buyer", ir_b, "buyer price and payment never above the limit"),
        AuditCheck("ir_provider", ir_p, "provider price and receipt never below the ask"),
        AuditCheck("budget_balance", 0 if balanced else 1, "buyer_pays == provider_receives + fee"),
        AuditCheck("capacity", over, "pool-slots where allocated devices exceed free capacity"),
        AuditCheck("order_shape", shape, "K pools, fill, same model, co-location, one start"),
        AuditCheck("node_fit", node_bad, "single-node gangs off a node, on a node too small, or over a node's devices"),
    )
    checked = net is not None and duals is not None and duals.ok
    envy_check = AuditCheck(
        "no_envy",
        envy,
        "losers with limit above a posted price (gang gaps)" if checked else "not checked: no posted prices",
    )
    missing = int(prices_wanted and not checked)
    prices_check = AuditCheck("prices", missing, "equilibrium prices computed, so no-envy was checked")
    return Audit(
        ir_buyer_violations=ir_b,
        ir_provider_violations=ir_p,
        envy_violations=envy,
        budget_balanced=balanced,
        uplift_fen_total=uplift,
        fee_total=fee_total,
        pricing_rule=pricing_rule,
        checks=(
            *checks,
            prices_check,
            envy_check,
            AuditCheck("fee_shortfall_fen", 0, f"fee below target: {fee_short} fen"),
        ),
        envy_details=tuple(details),
    )


def _floor(x: Fraction) -> int:
    """The largest whole number not above x."""
    return x.numerator // x.denominator


def _node_fit(prep: Prepared, priced: list[PricedPiece], pieces_pool: list[int], o_ix: dict[str, int]) -> int:
    """Single-node gangs without a valid node, plus node-slots where such gangs exceed the node's devices."""
    mk = prep.market
    slot = prep.slot_seconds
    bad = 0
    load: dict[tuple[int, int], np.ndarray] = {}
    for n, pp in enumerate(priced):
        a = pp.alloc
        if mk.orders[o_ix[a.order_id]].colocation != "node" or a.devices < 2:
            continue
        p = pieces_pool[n]
        sizes = prep.pool_node_sizes[p]
        if a.node is None or not 0 <= a.node < len(sizes) or a.devices > int(sizes[a.node]):
            bad += 1
            continue
        row = load.setdefault((p, a.node), np.zeros(prep.free.shape[1], dtype=np.int64))
        k = (a.start - prep.slot0) // slot
        row[k : k + (a.end - a.start) // slot] += a.devices
    for (p, node), row in load.items():
        bad += int((row > int(prep.pool_node_sizes[p][node])).sum())
    return bad
