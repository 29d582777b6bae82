"""Market clearing: eligibility by class, the min-cost-flow (or LP) relaxation, gang repair and placement
inside classes, then prices and the audit. `clear` is a pure, deterministic function of the snapshot."""

from __future__ import annotations

import time
from decimal import Decimal

import numpy as np

from matching.audit import audit
from matching.baselines import fifo_first_fit, greedy_price_time
from matching.components import count_components
from matching.eligibility import Prepared, prepare
from matching.mip import count_candidates, solve_mip, to_placer
from matching.model import ClearingResult, Market, RoundStats, Unfilled, validate_market
from matching.placement import Piece, Placer
from matching.polish import FLOW_MARKET_MULTIPLE, FLOW_MAX_COLUMNS, MARKET_MULTIPLE, polish
from matching.polish import MAX_COLUMNS as POLISH_MAX_COLUMNS
from matching.prices import (
    LP_DUALS_RULE,
    LP_MIN_DUALS_RULE,
    POTENTIALS_RULE,
    class_prices,
    compute_duals,
    lp_duals,
    lp_min_duals,
    potentials,
    price_pieces,
)
from matching.relaxation import Network, Relaxation, build_network, relax, resolve_lp
from matching.repair import place_within_flow
from matching.repair import repair as fast_repair
from matching.restricted import LOOSE_GAP, RESTRICTED_GAP, restricted_mip, root_bound

METHODS = ("mcf", "greedy", "fifo")


def _place_on_budget(prep: Prepared, net: Network, placer: Placer, budget: np.ndarray, o: int, e: int) -> bool:
    """Place order o on edge e using only pools whose relaxation flow in e's group can hold it."""
    fs = np.nonzero(net.f_group == int(net.e_group[e]))[0]
    return place_within_flow(prep, net, placer, budget, fs, o, e, tol=1e-6)


def _place_least_displacing(prep: Prepared, placer: Placer, slack: np.ndarray, o: int, edges: np.ndarray) -> bool:
    """Place a split single-pool gang where it displaces the fewest device-slots the relaxation gave to
    others (then best value, then best fit); updates the slack. False when it does not apply or fit."""
    order = prep.market.orders[o]
    if order.max_pools != 1:
        return False
    best: tuple[float, float, int, int] | None = None
    best_piece: Piece | None = None
    L = int(prep.order_lease[o])
    for e in edges:
        e = int(e)
        pools, avail = placer.candidates(e)
        lim = int(prep.e_limit[e])
        n = int(prep.e_n[e])
        need = int(prep.e_need[e])
        k = int(prep.e_start[e])
        for p, a in zip(pools.tolist(), avail.tolist(), strict=True):
            if a < need or prep.pool_ask[p] > lim:
                continue
            d = min(a, n)
            disp = float(np.maximum(0.0, d - slack[p, k : k + L]).sum())
            key = (disp, -float((lim - prep.pool_ask[p]) * d), a, p)
            if best is None or key < best:
                best = key
                best_piece = Piece(o, p, d, k, L, lim, e)
    if best_piece is None:
        return False
    placer.commit([best_piece])
    slack[best_piece.pool, best_piece.k : best_piece.k + L] -= best_piece.devices
    return True


def _place_on_flow(
    prep: Prepared, net: Network, rel: Relaxation, placer: Placer, items: list[tuple[int, int]]
) -> list[int]:
    """Place (order, edge) pairs on the pools the flow used in the edge's group (best value, best fit);
    those that do not fit there go on any pool of that class after every other pair is placed (so they
    do not take capacity the flow gave to others); returns the orders that did not fit."""
    budget = np.asarray(rel.y, dtype=np.float64).copy()
    f_order = np.argsort(net.f_group, kind="stable")
    g_bounds = np.searchsorted(net.f_group[f_order], np.arange(len(net.g_class) + 1))
    failed = []
    later = []
    for o, e in items:
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
        later.append((o, e))
    for o, e in later:
        if not placer.place(o, np.array([e])):
            failed.append(o)
    return failed


# Above this many LP columns only strategy A runs: B and C each cost a warm re-solve of the LP, over 150 CPU s
# apiece on windows 56,000 x 10,000 (2.77 million columns; 7,000 x 1,200 has 215,277 and keeps all three).
ONE_PASS_COLUMNS = 1_000_000


def repair_and_place(prep: Prepared, net: Network, rel: Relaxation, placer: Placer | None = None) -> Placer:
    """Turn the relaxation into an integral allocation; the better of two gang-repair orders.

    Gangs the relaxation serves whole in one group are always placed first. Gangs it splits are placed
    either before the single-device orders (strategy A) or after them into what is left (strategy B);
    both are run from the same state and the one with the higher welfare is kept (A alone on an LP of more
    than ONE_PASS_COLUMNS columns).
    """
    a = Placer(prep)
    _repair(prep, net, rel, a, split_first=True)
    if rel.lp is not None and rel.lp.mat.shape[1] > ONE_PASS_COLUMNS:
        return a
    b = Placer(prep)
    if not _repair(prep, net, rel, b, split_first=False):
        return a
    _insert_gangs(prep, b)
    c = _resolve_singles(prep, b, net, rel)
    best = max((a, b, c), key=lambda p: p.welfare_units())
    return best


def _units_relaxation(
    prep: Prepared, mask: np.ndarray, free: np.ndarray, net: Network | None, rel: Relaxation | None
) -> tuple[Network, Relaxation]:
    """The relaxation of the order edges in mask on the capacity free: a warm re-solve of the clearing's LP
    when it holds its solver (matching.relaxation.resolve_lp), else a new network solved from scratch."""
    if net is not None and rel is not None:
        again = resolve_lp(net, rel, mask, free)
        if again is not None:
            return net, again
    net2 = build_network(prep, edge_mask=mask, free=free)
    return net2, relax(net2)


def _resolve_singles(prep: Prepared, src: Placer, net: Network | None = None, rel: Relaxation | None = None) -> Placer:
    """Keep the multi-device orders of src where they are and re-solve every single-device order
    optimally (a min-cost flow on the capacity left), then fill leftovers."""
    out = Placer(prep)
    unit = np.array([len(es) > 0 and int(prep.e_n[es].max()) == 1 for es in prep.order_edges], dtype=bool)
    for pc in src.pieces:
        if not unit[pc.order]:
            out.commit([pc])
    seqs = [o.seq for o in prep.market.orders]
    if unit.any():
        net2, rel2 = _units_relaxation(prep, unit[prep.e_order], out.free, net, rel)
        items = []
        for o in np.nonzero(unit)[0].tolist():
            es = prep.order_edges[o]
            xs = rel2.x[es]
            if xs.sum() > 0.5:
                e = int(es[int(np.argmax(xs))])
                items.append((-int(prep.e_limit[e]), seqs[o], int(o), e))
        items.sort()
        for fo in _place_on_flow(prep, net2, rel2, out, [(o, e) for *_, o, e in items]):
            out.place(fo, prep.order_edges[fo])
    rest = []
    for o in range(prep.n_orders):
        es = prep.order_edges[o]
        if not out.filled[o] and len(es):
            rest.append((-int((prep.e_limit[es] - prep.class_min_ask[prep.e_class[es]]).max()), seqs[o], o))
    rest.sort()
    for *_, o in rest:
        out.place(o, prep.order_edges[o])
    return out


def _insert_gangs(prep: Prepared, placer: Placer) -> None:
    """Local search: put each unfilled single-pool gang on the pool where evicting the least valuable
    single-piece occupants makes room, when its value exceeds theirs; evicted orders are re-placed
    elsewhere if they fit."""
    slot = prep.slot_seconds
    todo = []
    for o in range(prep.n_orders):
        es = prep.order_edges[o]
        if placer.filled[o] or not len(es) or prep.market.orders[o].max_pools != 1 or prep.order_node[o]:
            continue
        if int(prep.e_n[es].max()) <= 1:
            continue
        v = int(((prep.e_limit[es] - prep.class_min_ask[prep.e_class[es]]) * prep.e_n[es]).max())
        todo.append((-v * int(prep.order_lease[o]), prep.market.orders[o].seq, o))
    todo.sort()
    for *_, o in todo:
        order = prep.market.orders[o]
        L = int(prep.order_lease[o])
        best: tuple[int, Piece, list[int]] | None = None
        for e in prep.order_edges[o]:
            e = int(e)
            c = int(prep.e_class[e])
            k = int(prep.e_start[e])
            n = int(prep.e_n[e])
            lim = int(prep.e_limit[e])
            for p in prep.class_pools[c].tolist():
                ask = int(prep.pool_ask[p])
                if ask > lim or order.billing_mode not in prep.pool_billing[p]:
                    continue
                if prep.pool_min_lease_slots[p] > L or int(prep.free[p, k : k + L].min()) < n:
                    continue
                room = placer.free[p, k : k + L].copy()
                occ = []
                for _i, pc in placer.pool_pieces(p):
                    if pc.k < k + L and pc.k + pc.lease > k and len(placer.order_pieces(pc.order)) == 1:
                        val = (pc.limit - ask) * pc.devices * pc.lease * slot
                        occ.append((val, pc.order, pc))
                occ.sort(key=lambda t: (t[0], t[1]))
                loss = 0
                evict: list[int] = []
                for val, oo, pc in occ:
                    if room.min() >= n:
                        break
                    lo, hi = max(pc.k, k) - k, min(pc.k + pc.lease, k + L) - k
                    room[lo:hi] += pc.devices
                    loss += val
                    evict.append(oo)
                if room.min() < n:
                    continue
                gain = (lim - ask) * n * L * slot - loss
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, Piece(o, p, n, k, L, lim, e), evict)
        if best is None:
            continue
        _, piece, evict = best
        for oo in evict:
            placer.remove(oo)
        placer.commit([piece])
        for oo in evict:
            placer.place(oo, prep.order_edges[oo])


def _repair(prep: Prepared, net: Network, rel: Relaxation, placer: Placer, *, split_first: bool) -> bool:
    """One repair pass; returns whether any gang was split (so the other strategy can differ).

    1. Gang repair: multi-device orders the relaxation serves, largest gangs and longest leases first,
       then limit, then arrival; each goes best value then best fit (smallest hole that holds it) on the
       classes that carried its flow, then on any of its classes.
    2. Single-device orders: a second relaxation on the capacity left, which is integral for them
       (unit demands on a network), then each is placed on a pool its group's flow used.
    3. Remaining orders by best surplus per device, then arrival, into capacity left over.
    """
    x = rel.x
    seqs = [o.seq for o in prep.market.orders]
    unit = np.zeros(prep.n_orders, dtype=bool)
    gangs: list[tuple[int, int, int, int, int, int]] = []
    late: list[tuple[int, int, int, int, int, int]] = []
    rest: list[tuple[int, int, int]] = []
    for o in range(prep.n_orders):
        es = prep.order_edges[o]
        if not len(es):
            continue
        if int(prep.e_n[es].max()) == 1:
            unit[o] = True
            continue
        xs = x[es]
        pos = np.nonzero(xs > 1e-6)[0]
        if not len(pos):
            best_sur = int((prep.e_limit[es] - prep.class_min_ask[prep.e_class[es]]).max())
            rest.append((-best_sur, seqs[o], o))
            continue
        top = int(es[pos[np.argmax(xs[pos])]])
        gangs.append(
            (
                -int(prep.e_gang[top]),
                -int(prep.e_n[top]),
                -int(prep.order_lease[o]),
                -int(prep.e_limit[top]),
                seqs[o],
                o,
            )
        )
    gangs.sort()
    budget = np.asarray(rel.y, dtype=np.float64).copy()
    # slack per pool and slot left by the relaxation's own use: where a split gang displaces least
    slack = placer.free.astype(np.float64).copy()
    for f in np.nonzero(np.asarray(rel.y) > 1e-9)[0]:
        j = int(net.f_group[f])
        k = int(net.g_start[j])
        slack[int(net.f_pool[f]), k : k + int(net.g_lease[j])] -= float(rel.y[f])
    split = False
    for key in gangs:
        o = key[-1]
        es = prep.order_edges[o]
        flow_es = es[x[es] > 1e-6]
        flow_es = flow_es[np.argsort(-x[flow_es], kind="stable")]
        if any(_place_on_budget(prep, net, placer, budget, o, int(e)) for e in flow_es):
            continue
        split = True
        if not split_first:
            late.append(key)
        elif not _place_least_displacing(prep, placer, slack, o, flow_es) and not placer.place(o, flow_es):
            placer.place(o, es)
    # single-device orders: re-solve on the capacity left (integral for unit demands)
    if unit.any():
        mask = unit[prep.e_order]
        net2, rel2 = _units_relaxation(prep, mask, placer.free, net, rel)
        items = []
        for o in np.nonzero(unit)[0].tolist():
            es = prep.order_edges[o]
            xs = rel2.x[es]
            if xs.sum() > 0.5:
                e = int(es[int(np.argmax(xs))])
                items.append((-int(prep.e_limit[e]), seqs[o], int(o), e))
        items.sort()
        failed = _place_on_flow(prep, net2, rel2, placer, [(o, e) for *_, o, e in items])
        for o in failed:
            placer.place(o, prep.order_edges[o])
        for o in np.nonzero(unit)[0].tolist():
            if not placer.filled[o]:
                es = prep.order_edges[o]
                best_sur = int((prep.e_limit[es] - prep.class_min_ask[prep.e_class[es]]).max())
                rest.append((-best_sur, seqs[o], int(o)))
    for *_, o in late:
        es = prep.order_edges[o]
        if not placer.place(o, es[x[es] > 1e-6]):
            placer.place(o, es)
    rest.sort()
    for *_, o in rest:
        placer.place(o, prep.order_edges[o])
    return split


def run_method(prep: Prepared, net: Network, method: str) -> tuple[Placer, Relaxation | None, float]:
    """Allocate with one method on shared arrays; returns the placer, relaxation and solve seconds."""
    t0 = time.perf_counter()
    placer = Placer(prep)
    rel: Relaxation | None = None
    if method == "mcf":
        rel = relax(net)
        placer = fast_repair(prep, net, rel) if rel.method == "mcf" else repair_and_place(prep, net, rel, placer)
        placer = exact_polish(prep, net, rel, placer, gap_tolerance=POLISH_TOLERANCE)
    elif method == "greedy":
        greedy_price_time(prep, placer)
    elif method == "fifo":
        fifo_first_fit(prep, placer)
    else:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    return placer, rel, time.perf_counter() - t0


# A clearing within 0.01% of its LP bound is within 0.01% of the integer optimum: five times inside the 0.05%
# target, so the exact steps stop there. Polishing the last 0.0009% of a 3,000-order round (bench
# round-under-load's market) took HiGHS 23 s of a 24 s round; the fast repair alone takes 0.3 s.
POLISH_TOLERANCE = 1e-4
# Against a proven integer bound (the LP's was loose), the exact steps stop within 0.2% of it (issue 15's
# gang target): on gang 2,000 x 350 the polish took 14 CPU s to go from 0.106% to 0.066% below the optimum.
PROVEN_TOLERANCE = 2e-3
EXACT_MAX_COLUMNS = 3_000  # markets this small are re-solved whole by the integer model
EXACT_NODE_LIMIT = 500


def exact_polish(prep: Prepared, net: Network, rel: Relaxation, placer: Placer, gap_tolerance: float = 1e-6) -> Placer:
    """When the repaired allocation is not within tolerance of the bound: re-solve a small market whole
    with the integer model (warm-started from the allocation, deterministic node limit), a larger one
    neighbourhood by neighbourhood (matching.polish). Where the allocation stays far below the LP bound
    (multi-pool gangs), the whole-market steps of matching.restricted run first and their proven bound
    becomes the stopping bound and `prep.proven_bound`. Never returns a worse allocation."""
    if rel.value <= 0 or placer.welfare_units() >= rel.value * (1 - gap_tolerance):
        return placer
    everyone = np.ones(prep.n_orders, dtype=bool)
    if count_candidates(prep, everyone) > EXACT_MAX_COLUMNS:
        bound = rel.value
        loose = placer.welfare_units() < rel.value * (1 - LOOSE_GAP)
        if placer.welfare_units() < rel.value * (1 - RESTRICTED_GAP):
            placer = restricted_mip(prep, net, rel, placer)
        if loose:
            bound, placer = root_bound(prep, net, rel, placer)
            if bound < rel.value:
                prep.proven_bound = bound
                gap_tolerance = max(gap_tolerance, PROVEN_TOLERANCE)
        if placer.welfare_units() >= bound * (1 - gap_tolerance):
            return placer
        flow = rel.method == "mcf"
        cap = FLOW_MAX_COLUMNS if flow else POLISH_MAX_COLUMNS
        multiple = FLOW_MARKET_MULTIPLE if flow else MARKET_MULTIPLE
        return polish(
            prep,
            net,
            rel,
            placer,
            gap_tolerance=gap_tolerance,
            bound=bound,
            split=flow,
            max_columns=cap,
            multiple=multiple,
        )
    res = solve_mip(prep, net, node_limit=EXACT_NODE_LIMIT, hint=placer)
    if res is None or res.status == "failed":
        return placer
    if res.status == "limit":
        prep.limits_hit.append("exact")
    if np.isfinite(res.bound) and res.bound < rel.value:
        prep.proven_bound = res.bound
    alt = to_placer(prep, net, res)
    return alt if alt.welfare_units() > placer.welfare_units() else placer


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
    """Clear a market snapshot: allocations, minimum equilibrium prices, statistics and audit.

    `time_limit` is a deterministic work limit (OR-Tools deterministic seconds) for the price LP, which
    runs only for a relaxation without row duals (the flow's potentials and the time-indexed LP's own duals
    need none); never the wall clock, so the same snapshot gives the same result on any machine and under
    any load; a step stopped by its limit is named in `stats.limits_hit`. Only the `*_seconds` statistics
    vary by machine.
    """
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
    method_p = "none"
    if prices and len(placer.pieces):
        if rel.method == "mcf" and rel.graph is not None:
            duals = potentials(net, rel.graph)
            method_p = "potentials"
        elif rel.pi is not None and rel.mu is not None:
            duals = lp_min_duals(net, rel)
            method_p = "lp-min-duals"
            if duals is None:  # the step check failed twice: the basis' own duals, an equilibrium all the same
                duals = lp_duals(net, rel.pi, rel.mu)
                method_p = "lp-duals"
        else:
            # the time-indexed LP's optimum is the dual optimum (same model): pass 1 is not needed
            known = rel.method in ("lp-glop", "lp-highs") or all(o.quantity_scu is None for o in prep.market.orders)
            duals = compute_duals(net, rel.value if known else None, time_limit=time_limit)
            method_p = "dual-lp" if duals.ok else "pay-as-ask"
    pieces = sorted(placer.pieces, key=lambda p: (p.order, p.pool))
    if duals is not None and not duals.ok:
        prep.limits_hit.append("prices")
    priced, rule = price_pieces(pieces, net, duals, prep.market.fee_bps)
    if method_p == "potentials":
        rule = POTENTIALS_RULE
    elif method_p == "lp-duals":
        rule = LP_DUALS_RULE
    elif method_p == "lp-min-duals":
        rule = LP_MIN_DUALS_RULE
    price_s = time.perf_counter() - t0
    wanted = prices and bool(pieces)
    aud = audit(prep, priced, [p.pool for p in pieces], net, duals, rule, prices_wanted=wanted)
    welfare_units = placer.welfare_units()
    welfare = welfare_units // 3600
    lp = int(rel.value) // 3600 if rel.value > 0 else 0
    gap = Decimal(0)
    if rel.value > 0:
        gap = (Decimal(1) - Decimal(welfare_units) / Decimal(repr(rel.value))).quantize(Decimal("1e-9"))
    best_bound = prep.proven_bound if 0 < prep.proven_bound < rel.value else max(rel.value, 0.0)
    bound_gap = Decimal(0)
    if best_bound > 0:
        bound_gap = (Decimal(1) - Decimal(welfare_units) / Decimal(repr(float(best_bound)))).quantize(Decimal("1e-9"))
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
        limits_hit=tuple(sorted(set(prep.limits_hit))),
        prices_method=method_p,
        bound_fen=int(best_bound) // 3600,
        bound_gap=bound_gap,
    )
    return ClearingResult(
        allocations=tuple(p.alloc for p in priced),
        prices=tuple(class_prices(net, duals)),
        stats=stats,
        audit=aud,
        unfilled=tuple(unfilled(prep, placer)),
    )
