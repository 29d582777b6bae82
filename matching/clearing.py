"""Market clearing: eligibility by class, the min-cost-flow (or LP) relaxation, gang repair and placement
inside classes, then prices and the audit. `clear` is a pure, deterministic function of the snapshot."""

from __future__ import annotations

import time
from decimal import Decimal

import numpy as np

from matching.audit import audit
from matching.components import count_components
from matching.eligibility import Prepared, prepare
from matching.model import ClearingResult, Market, RoundStats, Unfilled, validate_market
from matching.placement import Placer
from matching.prices import class_prices, compute_duals, price_pieces
from matching.relaxation import Network, Relaxation, build_network, relax

METHODS = ("mcf", "greedy", "fifo")


def repair_and_place(prep: Prepared, net: Network, rel: Relaxation, placer: Placer) -> None:
    """Turn the relaxation into an integral allocation.

    Pass 1: every order the relaxation serves, largest gangs and longest leases first, then limit, then
    arrival. An order served fully in one group is placed best-fit on the pools the flow used in that
    group, else on any pool of that class; a split order (gang repair) tries the edges that carried its
    flow, then all its edges. Pass 2: the remaining orders by best surplus per device, then arrival,
    each on its best feasible placement (capacity left over by rounding).
    """
    x = rel.x
    n_ord = prep.n_orders
    budget = np.asarray(rel.y, dtype=np.float64).copy()
    f_order = np.argsort(net.f_group, kind="stable")
    g_bounds = np.searchsorted(net.f_group[f_order], np.arange(len(net.g_class) + 1))
    served: list[tuple[int, int, int, int, int, int, int]] = []
    rest: list[tuple[int, int, int]] = []
    seqs = [o.seq for o in prep.market.orders]
    for o in range(n_ord):
        es = prep.order_edges[o]
        if not len(es):
            continue
        xs = x[es]
        ns = prep.e_n[es]
        pos = np.nonzero(xs > 1e-6)[0]
        if not len(pos):
            best_sur = int((prep.e_limit[es] - prep.class_min_ask[prep.e_class[es]]).max())
            rest.append((-best_sur, seqs[o], o))
            continue
        full = np.nonzero(xs >= ns - 1e-6)[0]
        single = len(full) == 1 and len(pos) == 1
        e = int(es[full[0]]) if single else -1
        top = int(es[pos[np.argmax(xs[pos])]])
        served.append(
            (
                -int(prep.e_gang[top]),
                -int(prep.e_n[top]),
                -int(prep.order_lease[o]),
                -int(prep.e_limit[top]),
                seqs[o],
                o,
                e,
            )
        )
    served.sort()
    for *_, o, e in served:
        if e >= 0:
            j = int(net.e_group[e])
            fs = f_order[g_bounds[j] : g_bounds[j + 1]]
            need = int(prep.e_need[e])
            ok_f = fs[budget[fs] >= need - 1e-6] if len(fs) else fs
            if len(ok_f):
                c = int(prep.e_class[e])
                mask = np.isin(prep.class_pools[c], net.f_pool[ok_f])
                plan = placer.plan(o, np.array([e]), {e: mask})
                if plan is not None:
                    placer.commit(plan)
                    pos_f = {int(net.f_pool[f]): int(f) for f in ok_f}
                    for pc in plan:
                        f = pos_f.get(pc.pool)
                        if f is not None:
                            budget[f] -= pc.devices
                    continue
            if placer.place(o, np.array([e])):
                continue
        es = prep.order_edges[o]
        flow_es = es[x[es] > 1e-6]
        if not placer.place(o, flow_es):
            placer.place(o, es)
    rest.sort()
    for *_, o in rest:
        placer.place(o, prep.order_edges[o])


def run_method(prep: Prepared, net: Network, method: str) -> tuple[Placer, Relaxation | None, float]:
    """Allocate with one method on shared arrays; returns the placer, relaxation and solve seconds."""
    from matching.baselines import fifo_first_fit, greedy_price_time

    t0 = time.perf_counter()
    placer = Placer(prep)
    rel: Relaxation | None = None
    if method == "mcf":
        rel = relax(net)
        repair_and_place(prep, net, rel, placer)
    elif method == "greedy":
        greedy_price_time(prep, placer)
    elif method == "fifo":
        fifo_first_fit(prep, placer)
    else:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    return placer, rel, time.perf_counter() - t0


def unfilled(prep: Prepared, placer: Placer) -> list[Unfilled]:
    """Orders with no devices and why."""
    out = []
    for o, order in enumerate(prep.market.orders):
        if not placer.filled[o]:
            out.append(Unfilled(order.id, prep.reasons.get(o, "outbid_or_no_capacity")))
    return out


def clear(
    market: Market,
    *,
    method: str = "mcf",
    time_limit: float = 30.0,
    prices: bool = True,
    bound: Relaxation | None = None,
) -> ClearingResult:
    """Clear a market snapshot: allocations, minimum equilibrium prices, statistics and audit."""
    validate_market(market)
    t0 = time.perf_counter()
    prep = prepare(market)
    net = build_network(prep)
    build = time.perf_counter() - t0
    placer, rel, solve = run_method(prep, net, method)
    if rel is None:
        rel = bound if bound is not None else relax(net)
    return finalize(prep, net, rel, placer, method, build, solve, prices=prices, time_limit=time_limit)


def finalize(
    prep: Prepared,
    net: Network,
    rel: Relaxation,
    placer: Placer,
    method: str,
    build: float,
    solve: float,
    *,
    prices: bool = True,
    time_limit: float = 30.0,
) -> ClearingResult:
    """Price, audit and package an allocation."""
    t0 = time.perf_counter()
    duals = None
    if prices and len(placer.pieces):
        exact = rel.method == "mcf" and all(o.quantity_scu is None for o in prep.market.orders)
        duals = compute_duals(net, rel.value if exact else None, time_limit=time_limit)
    pieces = sorted(placer.pieces, key=lambda p: (p.order, p.pool))
    priced, rule = price_pieces(pieces, net, duals, prep.market.fee_bps)
    price_s = time.perf_counter() - t0
    aud = audit(prep, priced, [p.pool for p in pieces], net, duals, rule)
    welfare_units = placer.welfare_units()
    welfare = welfare_units // 3600
    lp = int(rel.value) // 3600 if rel.value > 0 else 0
    gap = Decimal(0)
    if rel.value > 0:
        gap = (Decimal(1) - Decimal(welfare_units) / Decimal(repr(rel.value))).quantize(Decimal("1e-9"))
    stats = RoundStats(
        method=method,
        welfare_fen=welfare,
        lp_bound_fen=lp,
        gap=gap,
        matched_devices=sum(p.devices for p in pieces),
        matched_orders=int(placer.filled.sum()),
        build_seconds=round(build, 6),
        solve_seconds=round(solve, 6),
        price_seconds=round(price_s, 6),
        components=count_components(prep),
        orders=prep.n_orders,
        pools=len(prep.market.pools),
        edges=len(prep.e_order),
        bound_method=rel.method,
    )
    return ClearingResult(
        allocations=tuple(p.alloc for p in priced),
        prices=tuple(class_prices(net, duals)),
        stats=stats,
        audit=aud,
        unfilled=tuple(unfilled(prep, placer)),
    )
