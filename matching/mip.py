"""The integer clearing model as one MIP (HiGHS through scipy.optimize.milp): exact for every placement rule,
compact because single-device orders stay aggregated.

Single-device orders (99% of real demand) are interchangeable inside a group (class, lease, gang, start,
billing) apart from their limits, so they keep the relaxation's shape: a binary x per order edge, an
integer y per pool edge, one balance row per group. A multi-device order gets a binary per (edge, pool)
candidate (per node for a single-node gang), and an order allowed on K > 1 pools an integer device count
per candidate inside one co-location scope. Capacity rows are the relaxation's capacity segments (inside a
segment the set of leases that may run is constant, so segment rows are exact); single-node gangs add one
row per (pool, node, segment).

Used twice: `hetex bench match --exact` solves the whole market to optimality (the proof of quality), and
the clearing runs it on the residual the fast repair leaves when that repair is not within tolerance of the
bound (a deterministic node limit, never the wall clock). Within a group an optimal solution serves only
orders whose limit is at least every ask it uses (else dropping the pair gains), so serving the highest
limits on the cheapest pools is individually rational.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from matching.eligibility import Prepared
from matching.placement import Piece, Placer
from matching.relaxation import Network, edge_caps, pair_index, segment_caps


@dataclass
class MipResult:
    """Solved integer model: pieces of multi-device orders, unit orders served per group, objective, bound."""

    gang_pieces: list[Piece]
    unit_edges: np.ndarray  # order edges of single-device orders that are served
    unit_flow: np.ndarray  # [F] devices of single-device orders per pool edge
    value: float  # welfare in cost units (fen x seconds / 3600), as Relaxation.value
    bound: float  # the solver's dual bound in the same units
    status: str  # "optimal" | "limit" | "failed"
    nodes: int
    seconds: float
    size: dict[str, int] = field(default_factory=dict)


def unit_order_mask(prep: Prepared) -> np.ndarray:
    """Orders whose every edge asks one device (aggregated in the model)."""
    nmax = np.zeros(prep.n_orders, dtype=np.int64)
    if len(prep.e_order):
        np.maximum.at(nmax, prep.e_order, prep.e_n)
    return nmax == 1


def count_candidates(prep: Prepared, orders: np.ndarray) -> int:
    """Variables the model would hold for the given orders (a cheap size check before building it): a
    single-node gang has a candidate per node of each pool of its class, any other gang one per pool."""
    units = unit_order_mask(prep)
    sizes = np.array([len(cp) for cp in prep.class_pools], dtype=np.int64)
    keep = orders[prep.e_order] if len(prep.e_order) else np.zeros(0, dtype=bool)
    gang_e = keep & ~units[prep.e_order]
    node_e = gang_e & prep.order_node[prep.e_order] & (prep.e_n > 1)
    total = int(keep.sum()) + int(sizes[prep.e_class[gang_e & ~node_e]].sum())
    if node_e.any():
        nodes = np.array([sum(len(prep.pool_node_sizes[p]) for p in cp.tolist()) for cp in prep.class_pools])
        total += int(nodes[prep.e_class[node_e]].sum())
    return total


class _Rows:
    """Sparse constraint rows collected as triplets."""

    def __init__(self) -> None:
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, cols: list[int] | np.ndarray, vals: list[float] | np.ndarray, lo: float, hi: float) -> None:
        i = len(self.lo)
        cols = np.asarray(cols, dtype=np.int64)
        self.r.append(np.full(len(cols), i, dtype=np.int64))
        self.c.append(cols)
        self.v.append(np.asarray(vals, dtype=np.float64))
        self.lo.append(lo)
        self.hi.append(hi)

    def add_block(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """Rows given as triplets with local row numbers 0..len(lo)-1."""
        base = len(self.lo)
        self.r.append(np.asarray(rows, dtype=np.int64) + base)
        self.c.append(np.asarray(cols, dtype=np.int64))
        self.v.append(np.asarray(vals, dtype=np.float64))
        self.lo.extend(np.asarray(lo, dtype=np.float64).tolist())
        self.hi.extend(np.asarray(hi, dtype=np.float64).tolist())


def solve_mip(
    prep: Prepared,
    net: Network,
    *,
    orders: np.ndarray | None = None,
    free: np.ndarray | None = None,
    node_free: dict[int, np.ndarray] | None = None,
    node_limit: int | None = None,
    time_limit: float | None = None,
    gap: float = 0.0,
    hint: Placer | None = None,
    unit_edges: np.ndarray | None = None,
    bound_only: bool = False,
) -> MipResult | None:
    """Best integral allocation of `orders` (mask; all by default) on the capacity `free` (default: all).

    node_free gives, per pool, the room each node has per slot for single-node gangs (default: whole
    nodes). node_limit is a deterministic branch-and-bound limit; time_limit (wall clock) is for the
    benchmark's exact run only. hint: an allocation given to the solver as its first incumbent (so the
    result is never worse). unit_edges: a mask of the single-device order edges kept (default: all; a
    restricted model's bound is not a bound of the market). bound_only: the root node with its cuts and no
    primal heuristics, for the dual bound. Returns None when the model is empty."""
    from scipy.sparse import csc_matrix

    t0 = time.perf_counter()
    slot = prep.slot_seconds
    if free is None:
        free = prep.free
    om = np.ones(prep.n_orders, dtype=bool) if orders is None else orders
    units = unit_order_mask(prep)
    E = len(prep.e_order)
    if not E:
        return None
    caps = segment_caps(net, free)
    F = len(net.f_pool)
    f_of = pair_index(net)
    # columns: unit order edges (binary), pool edges carrying units (integer), then gang candidates
    ue_mask = om[prep.e_order] & units[prep.e_order] & (net.e_group >= 0)
    if unit_edges is not None:
        ue_mask &= unit_edges
    ue = np.nonzero(ue_mask)[0]
    ug = np.zeros(len(net.g_class), dtype=bool)
    ug[net.e_group[ue]] = True
    uf = np.nonzero(ug[net.f_group])[0] if F else np.zeros(0, dtype=np.int64)
    n_x, n_y = len(ue), len(uf)
    obj: list[np.ndarray] = [
        (net.e_weight[ue] // slot).astype(np.float64),
        -(net.f_cost[uf] // slot).astype(np.float64),
    ]
    lb: list[np.ndarray] = [np.zeros(n_x), np.zeros(n_y)]
    ub: list[np.ndarray] = [np.ones(n_x), edge_caps(net, caps, uf).astype(np.float64)]
    integ: list[np.ndarray] = [np.ones(n_x), np.ones(n_y)]
    rows = _Rows()
    # unit orders with several edges: at most one
    eo = prep.e_order[ue]
    cnt = np.bincount(eo, minlength=prep.n_orders)
    multi = cnt[eo] > 1
    if multi.any():
        sel = np.nonzero(multi)[0]
        ordr = np.unique(eo[sel], return_inverse=True)[1].reshape(-1)
        k = int(ordr.max()) + 1
        rows.add_block(ordr, sel, np.ones(len(sel)), np.full(k, -np.inf), np.ones(k))
    # group balance: units served in group j = unit devices on j's pool edges
    gx = net.e_group[ue]
    gy = net.f_group[uf]
    gs, ginv = np.unique(np.concatenate([gx, gy]), return_inverse=True)
    ginv = ginv.reshape(-1)
    rows.add_block(
        ginv,
        np.concatenate([np.arange(n_x), n_x + np.arange(n_y)]),
        np.concatenate([np.ones(n_x), -np.ones(n_y)]),
        np.zeros(len(gs)),
        np.zeros(len(gs)),
    )
    # segment usage terms: (column, segment, devices per unit of the column)
    seg_terms_c: list[np.ndarray] = []
    seg_terms_s: list[np.ndarray] = []
    seg_terms_v: list[np.ndarray] = []
    if n_y:
        if net.f_first is not None and net.f_last is not None:
            ln = net.f_last[uf] - net.f_first[uf] + 1
            within = np.arange(int(ln.sum())) - np.repeat(np.cumsum(ln) - ln, ln)
            seg_terms_s.append(np.repeat(net.f_first[uf], ln) + within)
        else:
            ln = np.array([len(net.f_segs[f]) for f in uf], dtype=np.int64)
            seg_terms_s.append(np.concatenate([net.f_segs[f] for f in uf]))
        seg_terms_c.append(np.repeat(n_x + np.arange(n_y), ln))
        seg_terms_v.append(np.ones(int(ln.sum())))
    # multi-device orders
    col = n_x + n_y
    extra_obj: list[float] = []
    extra_lb: list[float] = []
    extra_ub: list[float] = []
    cand: list[tuple[int, int, int, int, int]] = []  # (column, order, edge, pool, node) for device columns
    fixed_dev: dict[int, int] = {}  # binary column -> devices it places (all-or-nothing K = 1)
    keys: dict[tuple[int, ...], tuple[int, int]] = {}  # (order, edge, pool, node) -> (binary col, device col)
    scope_col: dict[tuple[int, tuple[int, ...]], int] = {}
    node_terms: dict[tuple[int, int, int], list[tuple[int, float]]] = {}
    mk = prep.market
    node_room_cache: dict[int, np.ndarray] = {}

    def new_col(o: float, lo: float, hi: float) -> int:
        nonlocal col
        extra_obj.append(o)
        extra_lb.append(lo)
        extra_ub.append(hi)
        col += 1
        return col - 1

    def seg_use(c: int, f: int, dev: float) -> None:
        segs = net.f_segs[f]
        seg_terms_c.append(np.full(len(segs), c, dtype=np.int64))
        seg_terms_s.append(segs)
        seg_terms_v.append(np.full(len(segs), dev))

    def node_room(p: int) -> np.ndarray:
        r = node_room_cache.get(p)
        if r is None:
            sizes = prep.pool_node_sizes[p]
            r = np.repeat(sizes[:, None], free.shape[1], axis=1)
            if node_free is not None and p in node_free:
                r = np.minimum(r, node_free[p])
            node_room_cache[p] = r
        return r

    for o in np.nonzero(om & ~units)[0].tolist():
        order = mk.orders[o]
        L = int(prep.order_lease[o])
        K = order.max_pools
        node = bool(prep.order_node[o])
        ones: list[int] = []  # binaries of the order (K = 1): at most one
        scopes: dict[tuple[int, ...], list[tuple[int, int]]] = {}  # scope -> [(z col, d col)]
        scope_nn: dict[tuple[int, ...], tuple[int, int]] = {}
        for e in prep.order_edges[o].tolist():
            j = int(net.e_group[e])
            if j < 0:
                continue
            c = int(prep.e_class[e])
            k = int(prep.e_start[e])
            n = int(prep.e_n[e])
            need = int(prep.e_need[e])
            lim = int(prep.e_limit[e])
            for p in prep.class_pools[c].tolist():
                f = f_of.get((j, p))
                if f is None or int(prep.pool_ask[p]) > lim:
                    continue
                avail = int(caps[net.f_segs[f]].min())
                unit_val = float((lim - int(prep.pool_ask[p])) * L)
                if K == 1:
                    if avail < need:
                        continue
                    targets: list[tuple[int, int]] = [(-1, min(n, avail))]
                    if node and n > 1:
                        room = node_room(p)[:, k : k + L].min(axis=1)
                        targets = [(jn, min(n, int(r))) for jn, r in enumerate(room.tolist()) if r >= need]
                    for jn, top in targets:
                        z = new_col(unit_val * n if need == n else 0.0, 0, 1)
                        ones.append(z)
                        if need == n:
                            fixed_dev[z] = n
                            seg_use(z, f, float(n))
                            cand.append((z, o, e, p, jn))
                            keys[(o, e, p, jn)] = (z, z)
                            dcol = z
                            dev = float(n)
                        else:
                            dcol = new_col(unit_val, 0, top)
                            rows.add([dcol, z], [1.0, -float(top)], -np.inf, 0.0)
                            rows.add([dcol, z], [1.0, -float(need)], 0.0, np.inf)
                            seg_use(dcol, f, 1.0)
                            cand.append((dcol, o, e, p, jn))
                            keys[(o, e, p, jn)] = (z, dcol)
                            dev = 1.0
                        if jn >= 0:
                            for sg in net.f_segs[f].tolist():
                                node_terms.setdefault((p, jn, sg), []).append((dcol, dev))
                    continue
                if avail <= 0:
                    continue
                scope: tuple[int, ...] = (k,)
                if order.same_model or order.quantity_scu is not None:
                    scope += (int(prep.pool_model[p]),)
                if order.colocation == "site":
                    scope += (int(prep.pool_site[p]),)
                elif order.colocation == "region":
                    scope += (int(prep.pool_region[p]),)
                top = min(n, avail)
                z = new_col(0.0, 0, 1)
                d = new_col(unit_val, 0, top)
                rows.add([d, z], [1.0, -float(top)], -np.inf, 0.0)
                rows.add([d, z], [1.0, -1.0], 0.0, np.inf)
                seg_use(d, f, 1.0)
                cand.append((d, o, e, p, -1))
                keys[(o, e, p, -1)] = (z, d)
                scopes.setdefault(scope, []).append((z, d))
                scope_nn[scope] = (n, need)
        if ones:
            rows.add(ones, np.ones(len(ones)), -np.inf, 1.0)
        if scopes:
            s_cols = []
            for sc in sorted(scopes):
                n, need = scope_nn[sc]
                s = new_col(0.0, 0, 1)
                scope_col[(o, sc)] = s
                s_cols.append(s)
                zs = [z for z, _ in scopes[sc]]
                ds = [d for _, d in scopes[sc]]
                rows.add([*zs, s], [*([1.0] * len(zs)), -float(K)], -np.inf, 0.0)
                rows.add([*ds, s], [*([1.0] * len(ds)), -float(n)], -np.inf, 0.0)
                rows.add([*ds, s], [*([1.0] * len(ds)), -float(need)], 0.0, np.inf)
            rows.add(s_cols, np.ones(len(s_cols)), -np.inf, 1.0)
    n_cols = col
    # capacity segments
    if seg_terms_c:
        sc_ = np.concatenate(seg_terms_c)
        ss_ = np.concatenate(seg_terms_s)
        sv_ = np.concatenate(seg_terms_v)
        used_s, sinv = np.unique(ss_, return_inverse=True)
        rows.add_block(sinv.reshape(-1), sc_, sv_, np.full(len(used_s), -np.inf), caps[used_s].astype(np.float64))
    for (p, jn, sg), terms in sorted(node_terms.items()):
        lo_t, hi_t = int(net.s_lo[sg]), int(net.s_hi[sg])
        room = float(node_room(p)[jn, lo_t:hi_t].min())
        rows.add([c for c, _ in terms], [v for _, v in terms], -np.inf, room)
    c_obj = np.concatenate([*obj, np.array(extra_obj, dtype=np.float64)])
    if not n_cols:
        return None
    lbs = np.concatenate([*lb, np.array(extra_lb, dtype=np.float64)])
    ubs = np.concatenate([*ub, np.array(extra_ub, dtype=np.float64)])
    ints = np.concatenate([*integ, np.ones(n_cols - n_x - n_y)])
    A = csc_matrix(
        (np.concatenate(rows.v), (np.concatenate(rows.r), np.concatenate(rows.c))), shape=(len(rows.lo), n_cols)
    )
    size = {"columns": n_cols, "rows": len(rows.lo), "nonzeros": int(A.nnz), "unit_edges": n_x, "pool_edges": n_y}
    x0 = None
    if hint is not None:
        x0 = _hint_vector(prep, net, hint, n_cols, ue, uf, keys, scope_col, om)
    sol = _run_highs(
        c_obj,
        A,
        lbs,
        ubs,
        np.array(rows.lo),
        np.array(rows.hi),
        ints,
        x0,
        node_limit=node_limit,
        time_limit=time_limit,
        gap=gap,
        bound_only=bound_only,
    )
    seconds = time.perf_counter() - t0
    if sol is None:
        empty = np.zeros(0, dtype=np.int64)
        return MipResult([], empty, np.zeros(F, dtype=np.int64), 0.0, np.inf, "failed", 0, seconds, size)
    xs, value_s, bound_s, status, nodes = sol
    xv = np.rint(xs).astype(np.int64)
    pieces: list[Piece] = []
    for c, o, e, p, jn in cand:
        v = int(xv[c]) if c not in fixed_dev else int(xv[c]) * fixed_dev[c]
        if v > 0:
            pieces.append(Piece(o, p, v, int(prep.e_start[e]), int(prep.order_lease[o]), int(prep.e_limit[e]), e, jn))
    flow = np.zeros(F, dtype=np.int64)
    flow[uf] = xv[n_x : n_x + n_y]
    value = value_s * slot
    bound = max(value, bound_s * slot)
    return MipResult(pieces, ue[xv[:n_x] > 0], flow, value, bound, status, nodes, seconds, size)


def to_placer(prep: Prepared, net: Network, res: MipResult, base: Placer | None = None) -> Placer:
    """Commit a MIP solution: multi-device pieces as solved, single-device orders zipped per group with the
    pool flows (highest limit on the cheapest pool); a pair whose limit is below its ask is dropped."""
    placer = base if base is not None else Placer(prep)
    by_order: dict[int, list[Piece]] = {}
    for pc in res.gang_pieces:
        by_order.setdefault(pc.order, []).append(pc)
    for o in sorted(by_order):
        placer.commit(sorted(by_order[o], key=lambda p: p.pool))
    served = res.unit_edges
    if not len(served):
        return placer
    seq = np.fromiter((o.seq for o in prep.market.orders), dtype=np.int64, count=prep.n_orders)
    g = net.e_group[served]
    served = served[np.lexsort((seq[prep.e_order[served]], -prep.e_limit[served], g))]
    fy = np.nonzero(res.unit_flow > 0)[0]
    fy = fy[np.lexsort((net.f_pool[fy], prep.pool_ask[net.f_pool[fy]], net.f_group[fy]))]
    u_pool = np.repeat(net.f_pool[fy], res.unit_flow[fy])
    u_group = np.repeat(net.f_group[fy], res.unit_flow[fy])
    if len(u_pool) != len(served) or not np.array_equal(u_group, net.e_group[served]):
        raise RuntimeError("integer unit flow does not balance per group")
    keep = prep.e_limit[served] >= prep.pool_ask[u_pool]
    served, u_pool = served[keep], u_pool[keep]
    orders = prep.e_order[served]
    placer.commit_units(orders, u_pool, prep.e_start[served], prep.order_lease[orders], prep.e_limit[served], served)
    return placer


def _hint_vector(
    prep: Prepared,
    net: Network,
    hint: Placer,
    n_cols: int,
    ue: np.ndarray,
    uf: np.ndarray,
    keys: dict[tuple[int, ...], tuple[int, int]],
    scope_col: dict[tuple[int, tuple[int, ...]], int],
    om: np.ndarray,
) -> np.ndarray | None:
    """The column vector of an allocation (None when a piece of it lies outside the model)."""
    x0 = np.zeros(n_cols)
    x_of = {int(e): i for i, e in enumerate(ue.tolist())}
    y_of = {int(f): len(ue) + i for i, f in enumerate(uf.tolist())}
    f_of = pair_index(net)
    units = unit_order_mask(prep)
    mk = prep.market
    for pc in hint.pieces:
        if not om[pc.order]:
            continue
        if units[pc.order]:
            xi = x_of.get(pc.edge)
            f = f_of.get((int(net.e_group[pc.edge]), pc.pool))
            yi = None if f is None else y_of.get(f)
            if xi is None or yi is None:
                return None
            x0[xi] = 1
            x0[yi] += 1
            continue
        node = pc.node if prep.order_node[pc.order] and pc.devices > 1 else -1
        key = keys.get((pc.order, pc.edge, pc.pool, node))
        if key is None:
            return None
        z, d = key
        x0[z] = 1
        if d != z:
            x0[d] = pc.devices
        order = mk.orders[pc.order]
        if order.max_pools > 1:
            scope: tuple[int, ...] = (pc.k,)
            if order.same_model or order.quantity_scu is not None:
                scope += (int(prep.pool_model[pc.pool]),)
            if order.colocation == "site":
                scope += (int(prep.pool_site[pc.pool]),)
            elif order.colocation == "region":
                scope += (int(prep.pool_region[pc.pool]),)
            sc = scope_col.get((pc.order, scope))
            if sc is None:
                return None
            x0[sc] = 1
    return x0


_BANNER_SHOWN = False
SOLVER_LOG = False  # set True while investigating a model: HiGHS then prints its log


def _new_highs() -> Any:
    """A HiGHS instance; the first one of a process prints a banner on file descriptor 1 from C++ before
    any option can be set, so that one is created with descriptor 1 pointed at the null device (the CLI's
    --json output stays one JSON document)."""
    import sys

    import highspy

    global _BANNER_SHOWN
    if _BANNER_SHOWN:
        return highspy.Highs()
    _BANNER_SHOWN = True
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        return highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _run_highs(
    c: np.ndarray,
    A: Any,
    lb: np.ndarray,
    ub: np.ndarray,
    rlo: np.ndarray,
    rhi: np.ndarray,
    ints: np.ndarray,
    x0: np.ndarray | None,
    *,
    node_limit: int | None,
    time_limit: float | None,
    gap: float,
    bound_only: bool = False,
) -> tuple[np.ndarray, float, float, str, int] | None:
    """Maximise c.x with HiGHS (one thread, fixed seed): (x, objective, dual bound, status, nodes)."""
    import highspy

    h = _new_highs()
    h.setOptionValue("output_flag", SOLVER_LOG)
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("mip_rel_gap", float(gap))
    h.setOptionValue("mip_detect_symmetry", False)
    if node_limit is not None:
        h.setOptionValue("mip_max_nodes", int(node_limit))
    if time_limit is not None:
        h.setOptionValue("time_limit", float(time_limit))
    if bound_only:
        h.setOptionValue("mip_max_nodes", 1)
        h.setOptionValue("mip_allow_restart", False)
        h.setOptionValue("mip_heuristic_effort", 0.0)
        for name in ("rins", "rens", "feasibility_jump", "root_reduced_cost"):
            h.setOptionValue(f"mip_heuristic_run_{name}", False)
    lp = highspy.HighsLp()
    lp.num_col_ = int(A.shape[1])
    lp.num_row_ = int(A.shape[0])
    lp.col_cost_ = c
    lp.col_lower_ = lb
    lp.col_upper_ = ub
    lp.row_lower_ = rlo
    lp.row_upper_ = rhi
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr
    lp.a_matrix_.index_ = A.indices
    lp.a_matrix_.value_ = A.data
    lp.integrality_ = [highspy.HighsVarType.kInteger if v else highspy.HighsVarType.kContinuous for v in ints]
    h.passModel(lp)
    if x0 is not None:
        sol = highspy.HighsSolution()
        sol.col_value = x0.tolist()
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    st = h.getModelStatus()
    info = h.getInfo()
    if info.primal_solution_status == 0:  # no feasible point
        return None
    x = np.asarray(h.getSolution().col_value, dtype=np.float64)
    status = "optimal" if st == highspy.HighsModelStatus.kOptimal else "limit"
    return x, float(info.objective_function_value), float(info.mip_dual_bound), status, int(info.mip_node_count)
