"""The aggregated relaxation in device units: a min-cost flow when every order starts in the current slot,
else the time-indexed LP (GLOP). Its optimum is the welfare upper bound reported per round.

Network: order o -> group j = (class, lease L, gang g, start k, billing mode) -> pool p -> pool capacity
segments -> sink. A pool's capacity rows are the segments between the starts and ends of the leases that
may use it; with every lease starting at slot 0 the segments are nested, so they form a chain and the
whole model is a network (exact). Cost unit: fen x slot_seconds / 3600 per device (exact integers).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
from ortools.graph.python import min_cost_flow
from ortools.linear_solver import pywraplp

from matching.eligibility import Prepared


@dataclass
class Network:
    """Groups, pool edges and capacity segments built from a Prepared market (all numpy arrays)."""

    prep: Prepared
    e_group: np.ndarray  # [E] group of each order edge
    e_weight: np.ndarray  # [E] buyer value per device in cost units (limit x L x slot_seconds)
    g_class: np.ndarray
    g_lease: np.ndarray
    g_gang: np.ndarray
    g_start: np.ndarray
    g_billing: list[str]
    f_group: np.ndarray  # [F] pool edges: group -> pool
    f_pool: np.ndarray
    f_cost: np.ndarray  # ask x L x slot_seconds per device
    s_pool: np.ndarray  # [S] capacity segments of pools
    s_lo: np.ndarray
    s_hi: np.ndarray
    s_cap: np.ndarray
    f_segs: list[np.ndarray]  # segments each pool edge covers
    all_now: bool
    build_seconds: float = 0.0


@dataclass
class Relaxation:
    """Solved relaxation: flows on order edges (x) and pool edges (y), optimum in cost units."""

    x: np.ndarray
    y: np.ndarray
    value: float  # cost units (fen x seconds / 3600): welfare_fen = value / 3600
    method: str
    solve_seconds: float
    exact_int: bool = True
    extra: dict[str, float] = field(default_factory=dict)


def build_network(
    prep: Prepared, *, edge_mask: np.ndarray | None = None, free: np.ndarray | None = None
) -> Network:
    """Group order edges and connect groups to pools with capacity segments; arrays only.

    edge_mask keeps a subset of order edges (others get group -1); free overrides the capacity.
    """
    t0 = time.perf_counter()
    mk = prep.market
    slot_s = prep.slot_seconds
    E = len(prep.e_order)
    lease_e = prep.order_lease[prep.e_order] if E else np.zeros(0, dtype=np.int64)
    billing = [mk.orders[int(o)].billing_mode for o in prep.e_order]
    bill_names = sorted(set(billing))
    b_ix = {b: i for i, b in enumerate(bill_names)}
    e_bill = np.array([b_ix[b] for b in billing], dtype=np.int64)
    keys = np.stack([prep.e_class, lease_e, prep.e_gang, prep.e_start, e_bill], axis=1) if E else None
    if keys is not None:
        uniq, e_group = np.unique(keys, axis=0, return_inverse=True)
        e_group = e_group.reshape(-1)
    else:
        uniq = np.zeros((0, 5), dtype=np.int64)
        e_group = np.zeros(0, dtype=np.int64)
    if edge_mask is not None:
        e_group = np.where(edge_mask, e_group, -1)
    g_class, g_lease, g_gang, g_start, g_bill = (uniq[:, i] for i in range(5))
    e_weight = prep.e_limit * lease_e * slot_s

    # pool edges
    fg: list[np.ndarray] = []
    fp: list[np.ndarray] = []
    if free is None:
        free = prep.free
    used_groups = np.zeros(len(uniq), dtype=bool)
    if E:
        used_groups[e_group[e_group >= 0]] = True
    for j in range(len(uniq)):
        if not used_groups[j]:
            continue
        c, L, g, k, b = (int(v) for v in uniq[j])
        pools = prep.class_pools[c]
        avail = free[pools, k : k + L].min(axis=1)
        ok = (avail >= g) & (prep.pool_min_lease_slots[pools] <= L)
        bname = bill_names[b]
        if ok.any():
            sel = pools[ok]
            sel = np.array([p for p in sel if bname in prep.pool_billing[int(p)]], dtype=np.int64)
            if len(sel):
                fg.append(np.full(len(sel), j, dtype=np.int64))
                fp.append(sel)
    f_group = np.concatenate(fg) if fg else np.zeros(0, dtype=np.int64)
    f_pool = np.concatenate(fp) if fp else np.zeros(0, dtype=np.int64)
    f_lo = g_start[f_group]
    f_hi = f_lo + g_lease[f_group]
    f_cost = prep.pool_ask[f_pool] * g_lease[f_group] * slot_s

    # capacity segments per pool: between consecutive breakpoints of the leases that may use it
    s_pool: list[int] = []
    s_lo: list[int] = []
    s_hi: list[int] = []
    s_cap: list[int] = []
    f_segs: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(f_pool)
    if len(f_pool):
        order = np.argsort(f_pool, kind="stable")
        bounds = np.searchsorted(f_pool[order], np.arange(len(prep.market.pools) + 1))
        for p in np.unique(f_pool):
            idx = order[bounds[p] : bounds[p + 1]]
            bp = np.unique(np.concatenate([f_lo[idx], f_hi[idx]]))
            first = len(s_pool)
            for a, z in itertools.pairwise(bp):
                s_pool.append(int(p))
                s_lo.append(int(a))
                s_hi.append(int(z))
                s_cap.append(int(free[p, a:z].min()))
            for f in idx:
                a = int(np.searchsorted(bp, f_lo[f]))
                z = int(np.searchsorted(bp, f_hi[f]))
                f_segs[f] = np.arange(first + a, first + z, dtype=np.int64)
    net = Network(
        prep=prep,
        e_group=e_group,
        e_weight=e_weight,
        g_class=g_class,
        g_lease=g_lease,
        g_gang=g_gang,
        g_start=g_start,
        g_billing=[bill_names[int(b)] for b in g_bill],
        f_group=f_group,
        f_pool=f_pool,
        f_cost=f_cost,
        s_pool=np.array(s_pool, dtype=np.int64),
        s_lo=np.array(s_lo, dtype=np.int64),
        s_hi=np.array(s_hi, dtype=np.int64),
        s_cap=np.array(s_cap, dtype=np.int64),
        f_segs=f_segs,
        all_now=bool(E == 0 or int(prep.e_start.max()) == 0),
    )
    net.build_seconds = time.perf_counter() - t0
    return net


def solve_mcf(net: Network) -> Relaxation:
    """Min-cost flow relaxation (requires every lease to start at slot 0; nested segments form a chain).

    For SCU orders (device count differs per model) the order node's capacity is the largest count, a
    looser relaxation; the bound stays valid.
    """
    t0 = time.perf_counter()
    prep = net.prep
    n_ord = prep.n_orders
    E = len(prep.e_order)
    G = len(net.g_class)
    S = len(net.s_pool)
    src, snk = 0, 1
    o_node = 2
    g_node = o_node + n_ord
    s_node = g_node + G
    active = net.e_group >= 0
    cap_o = np.zeros(n_ord, dtype=np.int64)
    if E:
        np.maximum.at(cap_o, prep.e_order[active], prep.e_n[active])
    ea = np.nonzero(active)[0]
    tails = [np.full(n_ord, src), prep.e_order[ea] + o_node]
    heads = [np.arange(n_ord) + o_node, net.e_group[ea] + g_node]
    caps = [cap_o, prep.e_n[ea]]
    costs = [np.zeros(n_ord, dtype=np.int64), -net.e_weight[ea]]
    # pool edge -> the segment that ends at the lease end (chain entry)
    entry = np.array([int(s[-1]) for s in net.f_segs], dtype=np.int64) if len(net.f_pool) else np.zeros(0)
    big = int(cap_o.sum()) + 1
    tails.append(net.f_group + g_node)
    heads.append(entry.astype(np.int64) + s_node)
    caps.append(np.full(len(net.f_pool), big, dtype=np.int64))
    costs.append(net.f_cost.astype(np.int64))
    # chain: segment i -> previous segment of the same pool (if contiguous and starting at 0) or sink
    if S:
        prev_same = np.zeros(S, dtype=bool)
        prev_same[1:] = net.s_pool[1:] == net.s_pool[:-1]
        nxt = np.where(prev_same, np.arange(S) - 1 + s_node, snk)
        tails.append(np.arange(S) + s_node)
        heads.append(nxt)
        caps.append(net.s_cap)
        costs.append(np.zeros(S, dtype=np.int64))
    supply = int(cap_o.sum())
    tails.append(np.array([src]))
    heads.append(np.array([snk]))
    caps.append(np.array([supply]))
    costs.append(np.array([0]))
    smcf = min_cost_flow.SimpleMinCostFlow()
    t_arr = np.concatenate(tails).astype(np.int32)
    h_arr = np.concatenate(heads).astype(np.int32)
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(
        t_arr, h_arr, np.concatenate(caps).astype(np.int64), np.concatenate(costs).astype(np.int64)
    )
    sup = np.zeros(s_node + S, dtype=np.int64)
    sup[src] = supply
    sup[snk] = -supply
    smcf.set_nodes_supplies(np.arange(len(sup), dtype=np.int32), sup)
    t1 = time.perf_counter()
    status = smcf.solve()
    if status != smcf.OPTIMAL:
        raise RuntimeError(f"min-cost flow failed: status {status}")
    flows = smcf.flows(arcs)
    n_e = len(ea)
    x = np.zeros(E, dtype=np.int64)
    x[ea] = flows[n_ord : n_ord + n_e]
    y = flows[n_ord + n_e : n_ord + n_e + len(net.f_pool)].astype(np.int64)
    value = -float(smcf.optimal_cost())
    return Relaxation(
        x=x,
        y=y,
        value=value,
        method="mcf",
        solve_seconds=time.perf_counter() - t0,
        extra={"mcf_solve": time.perf_counter() - t1, "arcs": float(len(t_arr))},
    )


def solve_lp(net: Network, *, time_limit: float | None = None) -> Relaxation:
    """Time-indexed aggregated LP with GLOP: the general relaxation (any start slots, SCU orders exact)."""
    t0 = time.perf_counter()
    prep = net.prep
    E = len(prep.e_order)
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if time_limit:
        solver.SetTimeLimit(int(time_limit * 1000))
    active = np.nonzero(net.e_group >= 0)[0]
    scale = 1.0 / 3600.0
    xs = {int(e): solver.NumVar(0.0, float(prep.e_n[e]), "") for e in active}
    ys = [solver.NumVar(0.0, solver.infinity(), "") for _ in range(len(net.f_pool))]
    obj = solver.Objective()
    for e, v in xs.items():
        obj.SetCoefficient(v, float(net.e_weight[e]) * scale)
    for f, v in enumerate(ys):
        obj.SetCoefficient(v, -float(net.f_cost[f]) * scale)
    obj.SetMaximization()
    for o in range(prep.n_orders):
        es = [int(e) for e in prep.order_edges[o] if net.e_group[e] >= 0]
        if len(es) > 1:
            row = solver.Constraint(-solver.infinity(), 1.0)
            for e in es:
                row.SetCoefficient(xs[e], 1.0 / float(prep.e_n[e]))
    g_rows = [solver.Constraint(0.0, 0.0) for _ in range(len(net.g_class))]
    for e, v in xs.items():
        g_rows[int(net.e_group[e])].SetCoefficient(v, 1.0)
    for f, v in enumerate(ys):
        g_rows[int(net.f_group[f])].SetCoefficient(v, -1.0)
    s_rows = [solver.Constraint(-solver.infinity(), float(c)) for c in net.s_cap]
    for f, v in enumerate(ys):
        for s in net.f_segs[f]:
            s_rows[int(s)].SetCoefficient(v, 1.0)
    t1 = time.perf_counter()
    status = solver.Solve()
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        raise RuntimeError(f"LP relaxation failed: status {status}")
    x = np.zeros(E, dtype=np.float64)
    for e, v in xs.items():
        x[e] = v.solution_value()
    y = np.array([v.solution_value() for v in ys], dtype=np.float64)
    return Relaxation(
        x=x,
        y=y,
        value=solver.Objective().Value() * 3600.0,
        method="lp-glop",
        solve_seconds=time.perf_counter() - t0,
        exact_int=False,
        extra={"lp_solve": time.perf_counter() - t1},
    )


def relax(net: Network) -> Relaxation:
    """The relaxation: min-cost flow when every lease starts now, else the time-indexed LP."""
    if net.all_now:
        return solve_mcf(net)
    return solve_lp(net)
