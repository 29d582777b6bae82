"""Integral allocation from the min-cost-flow relaxation, built with arrays.

Single-device orders are solved exactly by a second min-cost flow on the capacity the multi-device orders
leave (unit demands on a network are integral) and assigned to pools group by group with numpy. Only the
multi-device orders (gangs, 1-3% of orders) go through the per-order placement routine: the ones the
relaxation serves whole on pools that can hold them first, then the ones it splits (best value, then best
fit, on the classes that carried their flow), then an insertion search that evicts lower-value
single-device orders when a gang is worth more, and a re-solve of the single-device orders. The exact
polish (matching.polish) runs afterwards, from the clearing.
"""

from __future__ import annotations

import numpy as np

from matching.eligibility import Prepared
from matching.placement import Piece, Placer
from matching.relaxation import Network, Relaxation, solve_mcf


def unit_orders(prep: Prepared) -> np.ndarray:
    """Orders with at least one edge whose every edge asks for one device in one pool."""
    if not len(prep.e_order):
        return np.zeros(prep.n_orders, dtype=bool)
    nmax = np.zeros(prep.n_orders, dtype=np.int64)
    np.maximum.at(nmax, prep.e_order, prep.e_n)
    return nmax == 1


def order_seq(prep: Prepared) -> np.ndarray:
    """Arrival sequence number per order (tie-breaks)."""
    return np.fromiter((o.seq for o in prep.market.orders), dtype=np.int64, count=prep.n_orders)


def place_units(prep: Prepared, net: Network, placer: Placer, units: np.ndarray, seq: np.ndarray) -> None:
    """Serve the given single-device orders optimally on the capacity the placer has left.

    A min-cost flow restricted to their edges (exact: integral for unit demands), then each group's
    served orders (highest limit first) are zipped with its pool flows (cheapest pool first)."""
    emask = units[prep.e_order]
    if not emask.any():
        return
    rel = solve_mcf(net, edge_mask=emask, free=placer.free)
    served = np.nonzero((rel.x > 0) & emask)[0]
    if not len(served):
        return
    g = net.e_group[served]
    served = served[np.lexsort((seq[prep.e_order[served]], -prep.e_limit[served], g))]
    fy = np.nonzero(rel.y > 0)[0]
    fy = fy[np.lexsort((net.f_pool[fy], prep.pool_ask[net.f_pool[fy]], net.f_group[fy]))]
    u_pool = np.repeat(net.f_pool[fy], rel.y[fy])
    u_group = np.repeat(net.f_group[fy], rel.y[fy])
    if len(u_pool) != len(served) or not np.array_equal(u_group, net.e_group[served]):
        raise RuntimeError("unit flow does not balance per group")
    orders = prep.e_order[served]
    placer.commit_units(
        orders,
        u_pool,
        prep.e_start[served],
        prep.order_lease[orders],
        prep.e_limit[served],
        served,
    )


def place_within_flow(
    prep: Prepared,
    net: Network,
    placer: Placer,
    budget: np.ndarray,
    fs: np.ndarray,
    o: int,
    e: int,
    tol: float = 0,
) -> bool:
    """Place order o on edge e using only the pool edges `fs` whose remaining relaxation flow (`budget`)
    can hold its whole need, and consume the flow the placement used."""
    need = int(prep.e_need[e])
    ok_f = fs[budget[fs] >= need - tol]
    if not len(ok_f):
        return False
    c = int(prep.e_class[e])
    mask = np.isin(prep.class_pools[c], net.f_pool[ok_f])
    plan = placer.plan(o, np.array([e]), {e: mask})
    if plan is None:
        return False
    placer.commit(plan)
    pos = {int(net.f_pool[f]): int(f) for f in ok_f}
    for pc in plan:
        f = pos.get(pc.pool)
        if f is not None:
            budget[f] -= pc.devices
    return True


class _Budget:
    """Relaxation flow per pool edge, indexed by group, consumed as gangs are placed on it."""

    def __init__(self, net: Network, rel: Relaxation) -> None:
        self.net = net
        self.left = np.asarray(rel.y, dtype=np.int64).copy()
        self.f_order = np.argsort(net.f_group, kind="stable")
        self.bounds = np.searchsorted(net.f_group[self.f_order], np.arange(len(net.g_class) + 1))

    def place(self, prep: Prepared, placer: Placer, o: int, e: int) -> bool:
        """Place order o on edge e using only pools whose remaining flow in e's group can hold it."""
        j = int(self.net.e_group[e])
        fs = self.f_order[self.bounds[j] : self.bounds[j + 1]]
        return place_within_flow(prep, self.net, placer, self.left, fs, o, e)


def _slack(prep: Prepared, net: Network, rel: Relaxation, free: np.ndarray) -> np.ndarray:
    """Free device-slots per pool and slot left over by the relaxation's own use."""
    slack = free.astype(np.int64).copy()
    diff = np.zeros((slack.shape[0], slack.shape[1] + 1), dtype=np.int64)
    fs = np.nonzero(np.asarray(rel.y) > 0)[0]
    k = net.g_start[net.f_group[fs]]
    np.add.at(diff, (net.f_pool[fs], k), rel.y[fs])
    np.add.at(diff, (net.f_pool[fs], k + net.g_lease[net.f_group[fs]]), -rel.y[fs])
    return slack - np.cumsum(diff, axis=1)[:, :-1]


def _place_least_displacing(prep: Prepared, placer: Placer, slack: np.ndarray, o: int, edges: np.ndarray) -> bool:
    """Place a single-pool gang where it displaces the fewest device-slots the relaxation gave to others
    (then best value, then best fit); updates the slack. False when it does not apply or fit."""
    if prep.market.orders[o].max_pools != 1:
        return False
    best: tuple[int, int, int, int] | None = None
    best_piece: Piece | None = None
    L = int(prep.order_lease[o])
    for e in edges.tolist():
        pools, avail = placer.candidates(e)
        lim = int(prep.e_limit[e])
        n = int(prep.e_n[e])
        need = int(prep.e_need[e])
        k = int(prep.e_start[e])
        ok = (avail >= need) & (prep.pool_ask[pools] <= lim)
        if not ok.any():
            continue
        pools, avail = pools[ok], avail[ok]
        d = np.minimum(avail, n)
        disp = np.maximum(0, d[:, None] - slack[pools, k : k + L]).sum(axis=1)
        val = (lim - prep.pool_ask[pools]) * d
        i = int(np.lexsort((pools, avail, -val, disp))[0])
        key = (int(disp[i]), -int(val[i]), int(avail[i]), int(pools[i]))
        if best is None or key < best:
            best = key
            best_piece = Piece(o, int(pools[i]), int(d[i]), k, L, lim, e)
    if best_piece is None:
        return False
    placer.commit([best_piece])
    slack[best_piece.pool, best_piece.k : best_piece.k + L] -= best_piece.devices
    return True


def _order_value(prep: Prepared, o: int) -> int:
    """Best possible surplus of an order over its whole lease (device-slots x fen), for ordering."""
    es = prep.order_edges[o]
    v = (prep.e_limit[es] - prep.class_min_ask[prep.e_class[es]]) * prep.e_n[es]
    return int(v.max()) * int(prep.order_lease[o])


def _insert_gangs(prep: Prepared, placer: Placer, units: np.ndarray, todo: list[int]) -> bool:
    """Put each unfilled single-pool gang where evicting the least valuable single-device occupants makes
    room, when its value exceeds theirs; returns whether anything was evicted (units need a re-solve)."""
    slot = prep.slot_seconds
    evicted_any = False
    for o in todo:
        if placer.filled[o] or prep.market.orders[o].max_pools != 1 or prep.order_node[o]:
            continue
        billing = prep.market.orders[o].billing_mode
        L = int(prep.order_lease[o])
        best: tuple[int, Piece, list[int]] | None = None
        for e in prep.order_edges[o].tolist():
            c = int(prep.e_class[e])
            k = int(prep.e_start[e])
            n = int(prep.e_n[e])
            lim = int(prep.e_limit[e])
            pools = prep.class_pools[c]
            ok = (prep.pool_ask[pools] < lim) & (prep.pool_min_lease_slots[pools] <= L)
            ok &= prep.free[pools, k : k + L].min(axis=1) >= n
            for p in pools[ok].tolist():
                if billing not in prep.pool_billing[p]:
                    continue
                ask = int(prep.pool_ask[p])
                gain0 = (lim - ask) * n * L * slot
                if best is not None and gain0 <= best[0]:
                    continue
                room = placer.free[p, k : k + L].copy()
                occ = []
                for _i, pc in placer.pool_pieces(p):
                    if units[pc.order] and pc.k < k + L and pc.k + pc.lease > k:
                        occ.append(((pc.limit - ask) * pc.devices * pc.lease * slot, pc.order, pc))
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
                gain = gain0 - loss
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, Piece(o, p, n, k, L, lim, e), evict)
        if best is None:
            continue
        _, piece, evict = best
        for oo in evict:
            placer.remove(oo)
        placer.commit([piece])
        evicted_any = evicted_any or bool(evict)
    return evicted_any


def repair(prep: Prepared, net: Network, rel: Relaxation) -> Placer:
    """Integral allocation from the relaxation (see the module docstring for the steps).

    Split gangs go, best value then best fit, on the classes that carried their flow (placing them where
    they displace the fewest device-slots of the relaxation measured worse: 0.047% against 0.015% gap at
    7k orders, 0.45% against 0.21% with leases). The clearing then polishes the result with the exact
    integer model on the neighbourhoods of the gangs it split (matching.polish)."""
    units = unit_orders(prep)
    seq = order_seq(prep)
    best, _split = _repair_once(prep, net, rel, units, seq, least_displacing=False)
    return best


def _close(placer: Placer, rel: Relaxation, tol: float) -> bool:
    """Whether the allocation's welfare is within a relative tolerance of the relaxation bound."""
    return placer.welfare_units() >= rel.value * (1.0 - tol)


def _repair_once(
    prep: Prepared,
    net: Network,
    rel: Relaxation,
    units: np.ndarray,
    seq: np.ndarray,
    *,
    least_displacing: bool,
) -> tuple[Placer, list[int]]:
    """One repair pass; returns the allocation and the gangs the relaxation split."""
    placer = Placer(prep)
    x = np.asarray(rel.x)
    has_edges = np.array([len(es) > 0 for es in prep.order_edges], dtype=bool)
    gangs = np.nonzero(has_edges & ~units)[0].tolist()
    budget = _Budget(net, rel)
    slack = _slack(prep, net, rel, placer.free) if least_displacing else None
    served: list[tuple[int, int, int, int, int, int]] = []
    rest: list[tuple[int, int, int]] = []
    for o in gangs:
        es = prep.order_edges[o]
        xs = x[es]
        if not (xs > 0).any():
            rest.append((-_order_value(prep, o), int(seq[o]), o))
            continue
        top = int(es[int(np.argmax(xs))])
        served.append(
            (
                -int(prep.e_gang[top]),
                -int(prep.e_n[top]),
                -int(prep.order_lease[o]),
                -int(prep.e_limit[top]),
                int(seq[o]),
                o,
            )
        )
    served.sort()
    late: list[int] = []
    split: list[int] = []
    for key in served:
        o = key[-1]
        es = prep.order_edges[o]
        flow_es = es[x[es] > 0]
        flow_es = flow_es[np.argsort(-x[flow_es], kind="stable")]
        if any(budget.place(prep, placer, o, int(e)) for e in flow_es):
            continue
        split.append(o)
        if slack is not None and _place_least_displacing(prep, placer, slack, o, flow_es):
            continue
        if not placer.place(o, flow_es):
            late.append(o)
    place_units(prep, net, placer, units, seq)
    for o in late:
        placer.place(o, prep.order_edges[o])
    rest.sort()
    for *_, o in rest:
        placer.place(o, prep.order_edges[o])
    todo = [o for o in gangs if not placer.filled[o]]
    todo.sort(key=lambda o: (-_order_value(prep, o), int(seq[o])))
    if _insert_gangs(prep, placer, units, todo):
        for o in np.nonzero(units & placer.filled)[0].tolist():
            placer.remove(o)
        place_units(prep, net, placer, units, seq)
    return placer, split
