"""The aggregated relaxation in device units: a min-cost flow when every order starts in the current slot,
else the time-indexed LP (HiGHS' dual simplex; its basis is kept for the repair's warm re-solves). Its optimum
is the welfare upper bound reported per round.

Network: order o -> group j = (class, lease L, gang g, start k, billing mode, site need) -> pool p -> pool
capacity segments -> sink. A gang on up to K > 1 pools of one site and model has groups of its own (site
need = its need and K) whose pool edges reach only the sites that can hold it on K pools: without that the
flow served 64-device gangs from pools of several small sites, and its bound on `gang` 7,000 x 1,200 was
5.6% above the integer optimum (0.45% with it). Likewise a gang that must sit on one node has groups of its
own whose pool edges reach only pools with a node of its size (`nodes` 7,000 x 1,200: the repair guided by
that flow ends 0.12% instead of 0.50% below the bound after the polish). A pool's capacity rows are the
segments between the starts and ends of the leases that may use it; with every lease starting at slot 0 the
segments are nested, so they form a chain and the whole model is a network (exact). Cost unit: fen x
slot_seconds / 3600 per device (exact integers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ortools.graph.python import min_cost_flow

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
    g_site: np.ndarray | None = None  # [G] 0, or need x SITE_K_RADIX + K for a group of site-co-located gangs
    f_last: np.ndarray | None = None  # last segment of each pool edge (the chain entry)
    f_first: np.ndarray | None = None  # first segment of each pool edge (its segments are first..last)
    pairs: dict[tuple[int, int], int] | None = field(default=None, repr=False)  # (group, pool) -> pool edge
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
    graph: FlowGraph | None = None  # the solved min-cost flow network (for node potentials)
    pi: np.ndarray | None = None  # the LP's group-row duals (fen per device for the lease), when solved as an LP
    mu: np.ndarray | None = None  # the LP's segment-row duals (rent per device of a capacity segment)
    solver: Any = field(default=None, repr=False)  # the HiGHS instance holding the LP's basis (warm re-solves)
    lp: LpArrays | None = field(default=None, repr=False)  # the LP as solved
    basis: Any = field(default=None, repr=False)  # HiGHS' optimal basis of the LP as solved (the price pass)


@dataclass
class FlowGraph:
    """The min-cost flow network as solved: arcs, capacities, integer costs (cost units / unit), flows."""

    tails: np.ndarray
    heads: np.ndarray
    caps: np.ndarray
    costs: np.ndarray
    flows: np.ndarray
    nodes: int
    unit: int
    sink: int
    g_node: int  # node of group 0 (groups are consecutive)
    s_node: int  # node of segment 0
    s_map: np.ndarray | None = None  # node of each capacity segment (implied segments share their run's node)


def build_network(prep: Prepared, *, edge_mask: np.ndarray | None = None, free: np.ndarray | None = None) -> Network:
    """Group order edges and connect groups to pools with capacity segments; arrays only.

    edge_mask keeps a subset of order edges (others get group -1); free overrides the capacity.
    """
    t0 = time.perf_counter()
    mk = prep.market
    slot_s = prep.slot_seconds
    E = len(prep.e_order)
    H = prep.horizon
    P = len(mk.pools)
    if free is None:
        free = prep.free
    lease_e = prep.order_lease[prep.e_order] if E else np.zeros(0, dtype=np.int64)
    o_bill_name = [o.billing_mode for o in mk.orders]
    bill_names = sorted({o_bill_name[int(o)] for o in np.unique(prep.e_order).tolist()})
    b_ix = {b: i for i, b in enumerate(bill_names)}
    o_bill = np.array([b_ix.get(b, 0) for b in o_bill_name], dtype=np.int64)
    e_bill = o_bill[prep.e_order] if E else np.zeros(0, dtype=np.int64)
    e_site = site_gang_need(prep)
    cols = [prep.e_class, lease_e, prep.e_gang, prep.e_start, e_bill, e_site]
    if E:
        radix = [int(c.max()) + 1 for c in cols]
        code = np.zeros(E, dtype=np.int64)
        for c, r in zip(cols, radix, strict=True):
            code = code * r + c
        ucode, e_group = np.unique(code, return_inverse=True)
        e_group = e_group.reshape(-1).astype(np.int64)
        uniq = np.zeros((len(ucode), 6), dtype=np.int64)
        rest = ucode.copy()
        for i in range(5, -1, -1):
            uniq[:, i] = rest % radix[i]
            rest //= radix[i]
    else:
        uniq = np.zeros((0, 6), dtype=np.int64)
        e_group = np.zeros(0, dtype=np.int64)
    if edge_mask is not None:
        e_group = np.where(edge_mask, e_group, -1)
    g_class, g_lease, g_gang, g_start, g_bill, g_site = (uniq[:, i] for i in range(6))
    e_weight = prep.e_limit * lease_e * slot_s

    # pool edges: every pool of the group's class that can hold one gang for the whole lease
    used = np.zeros(len(uniq), dtype=bool)
    if E:
        used[e_group[e_group >= 0]] = True
    gs = np.nonzero(used)[0]
    sizes = np.array([len(cp) for cp in prep.class_pools], dtype=np.int64)
    cp_flat = np.concatenate(prep.class_pools) if len(prep.class_pools) else np.zeros(0, dtype=np.int64)
    cp_off = np.concatenate([[0], np.cumsum(sizes)])
    cnt = sizes[g_class[gs]]
    f_group = np.repeat(gs, cnt)
    within = np.arange(len(f_group)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    f_pool = cp_flat[cp_off[g_class[f_group]] + within].astype(np.int64)
    fk, fL = g_start[f_group], g_lease[f_group]
    avail = np.zeros(len(f_group), dtype=np.int64)
    pair = fk * (H + 1) + fL
    for pc in np.unique(pair).tolist():
        k, L = divmod(pc, H + 1)
        sel = pair == pc
        avail[sel] = free[:, k : k + L].min(axis=1)[f_pool[sel]]
    pool_bill = np.zeros((P, max(1, len(bill_names))), dtype=bool)
    for p, bs in enumerate(prep.pool_billing):
        for b in bs:
            if b in b_ix:
                pool_bill[p, b_ix[b]] = True
    ok = (avail >= g_gang[f_group]) & (prep.pool_min_lease_slots[f_pool] <= fL)
    ok &= pool_bill[f_pool, g_bill[f_group]] if len(f_group) else ok
    f_group, f_pool, avail = f_group[ok], f_pool[ok], avail[ok]
    if (g_site == NODE_GANG).any():
        big = np.array([int(ns.max()) if len(ns) else 0 for ns in prep.pool_node_sizes], dtype=np.int64)
        keep = (g_site[f_group] != NODE_GANG) | (big[f_pool] >= g_gang[f_group])
        f_group, f_pool, avail = f_group[keep], f_pool[keep], avail[keep]
    if (g_site > NODE_GANG).any():
        keep = _site_room(prep, f_group, f_pool, avail, g_site) >= g_site[f_group] // SITE_K_RADIX
        f_group, f_pool = f_group[keep], f_pool[keep]
    f_lo = g_start[f_group]
    f_hi = f_lo + g_lease[f_group]
    f_cost = prep.pool_ask[f_pool] * g_lease[f_group] * slot_s

    # capacity segments per pool: between consecutive breakpoints of the leases that may use it
    bp = np.unique(np.concatenate([f_pool * (H + 1) + f_lo, f_pool * (H + 1) + f_hi]))
    bp_pool, bp_t = bp // (H + 1), bp % (H + 1)
    starts_seg = np.zeros(len(bp), dtype=bool)
    if len(bp):
        starts_seg[:-1] = bp_pool[:-1] == bp_pool[1:]
    seg_of_bp = np.cumsum(starts_seg) - 1
    si = np.nonzero(starts_seg)[0]
    s_pool = bp_pool[si]
    s_lo = bp_t[si]
    s_hi = bp_t[si + 1]
    s_cap = _segment_min(free, s_pool, s_lo, s_hi)
    i_a = np.searchsorted(bp, f_pool * (H + 1) + f_lo)
    i_z = np.searchsorted(bp, f_pool * (H + 1) + f_hi)
    f_first = seg_of_bp[i_a] if len(f_pool) else np.zeros(0, dtype=np.int64)
    f_last = seg_of_bp[i_z - 1] if len(f_pool) else np.zeros(0, dtype=np.int64)
    f_segs = [np.arange(a, z + 1, dtype=np.int64) for a, z in zip(f_first.tolist(), f_last.tolist(), strict=True)]
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
        s_pool=s_pool.astype(np.int64),
        s_lo=s_lo.astype(np.int64),
        s_hi=s_hi.astype(np.int64),
        s_cap=s_cap,
        f_segs=f_segs,
        all_now=bool(E == 0 or int(prep.e_start.max()) == 0),
        g_site=g_site,
        f_last=f_last.astype(np.int64),
        f_first=f_first.astype(np.int64),
    )
    net.build_seconds = time.perf_counter() - t0
    return net


SITE_K_RADIX = 1024  # site-gang group code: need x SITE_K_RADIX + pools allowed (max_pools)
NODE_GANG = 1  # group code of gangs that must sit on one node: pool edges only to pools with a node that holds them


def site_gang_need(prep: Prepared) -> np.ndarray:
    """Per order edge, 0, NODE_GANG for a gang that must sit on one node, or (for a gang on up to K > 1
    pools of one site and model) need x SITE_K_RADIX + K: such gangs get groups of their own whose pool
    edges reach only pools with a node that holds them / in sites that can hold the need on K pools."""
    mk = prep.market
    code = np.zeros(prep.n_orders, dtype=np.int64)
    for o, order in enumerate(mk.orders):
        if order.max_pools > 1 and order.colocation == "site" and order.same_model and order.quantity_scu is None:
            code[o] = min(order.max_pools, SITE_K_RADIX - 1)
    if not len(prep.e_order):
        return np.zeros(0, dtype=np.int64)
    k = code[prep.e_order]
    out = np.where(k > 0, prep.e_need * SITE_K_RADIX + k, 0)
    node = prep.order_node[prep.e_order] & (prep.e_gang > 1)
    return np.where(node, NODE_GANG, out)


def _site_room(
    prep: Prepared, f_group: np.ndarray, f_pool: np.ndarray, avail: np.ndarray, g_site: np.ndarray
) -> np.ndarray:
    """Per pool edge of a site-gang group: the devices its site's K largest pools of the group hold for
    the lease (an upper bound of what one gang of the group can take there); other edges: a large number."""
    room = np.full(len(f_group), np.iinfo(np.int64).max // 4, dtype=np.int64)
    sel = np.nonzero(g_site[f_group] > 0)[0]
    if not len(sel):
        return room
    site = prep.pool_site[f_pool[sel]]
    order = np.lexsort((-avail[sel], site, f_group[sel]))
    idx = sel[order]
    key_g, key_s = f_group[idx], prep.pool_site[f_pool[idx]]
    start = np.ones(len(idx), dtype=bool)
    start[1:] = (key_g[1:] != key_g[:-1]) | (key_s[1:] != key_s[:-1])
    run = np.cumsum(start) - 1
    first = np.nonzero(start)[0]
    rank = np.arange(len(idx)) - first[run]
    K = g_site[key_g] % SITE_K_RADIX
    take = np.where(rank < K, avail[idx], 0)
    total = np.bincount(run, weights=take).astype(np.int64)
    room[idx] = total[run]
    return room


def _segment_min(free: np.ndarray, s_pool: np.ndarray, s_lo: np.ndarray, s_hi: np.ndarray) -> np.ndarray:
    """Minimum free devices over the slots [lo, hi) of each segment's pool."""
    S = len(s_pool)
    if not S:
        return np.zeros(0, dtype=np.int64)
    H = free.shape[1]
    flat = np.concatenate([free.reshape(-1), np.zeros(1, dtype=free.dtype)])
    idx = np.empty(2 * S, dtype=np.int64)
    idx[0::2] = s_pool * H + s_lo
    idx[1::2] = s_pool * H + s_hi
    return np.minimum.reduceat(flat, idx)[0::2].astype(np.int64)


def pair_index(net: Network) -> dict[tuple[int, int], int]:
    """Pool edge of each (group, pool) pair, built once per network (the exact polish asks per neighbourhood:
    rebuilding it was 38 of 680 wall s of leases 56,000 x 10,000)."""
    if net.pairs is None:
        net.pairs = {(g, p): f for f, (g, p) in enumerate(zip(net.f_group.tolist(), net.f_pool.tolist(), strict=True))}
    return net.pairs


def edge_caps(net: Network, caps: np.ndarray, fs: np.ndarray) -> np.ndarray:
    """Capacity of each pool edge in fs: the smallest of its segments' capacities `caps`."""
    if not len(fs):
        return np.zeros(0, dtype=caps.dtype)
    if net.f_first is None or net.f_last is None:
        return np.array([caps[net.f_segs[f]].min() for f in fs.tolist()], dtype=caps.dtype)
    # gather each edge's own segments and reduce those: a reduceat over the whole array also reduced the
    # spans between edges (19.7 of 87.7 CPU s on `leases` 56,000 x 10,000)
    first = net.f_first[fs]
    lens = net.f_last[fs] - first + 1
    offs = np.cumsum(lens) - lens
    idx = np.repeat(first - offs, lens) + np.arange(int(lens.sum()))
    return np.minimum.reduceat(caps[idx], offs)


def segment_caps(net: Network, free: np.ndarray) -> np.ndarray:
    """Capacity of every segment under a free matrix: the minimum free devices over its slots."""
    return _segment_min(free, net.s_pool, net.s_lo, net.s_hi)


def solve_mcf(net: Network, *, edge_mask: np.ndarray | None = None, free: np.ndarray | None = None) -> Relaxation:
    """Min-cost flow relaxation (requires every lease to start at slot 0; nested segments form a chain).

    For SCU orders (device count differs per model) the order node's capacity is the largest count, a
    looser relaxation; the bound stays valid. edge_mask keeps a subset of the order edges and free
    replaces the capacity (the exact solve of single-device orders on what gangs leave).
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
    if edge_mask is not None:
        active = active & edge_mask
    s_cap = net.s_cap if free is None else segment_caps(net, free)
    cap_o = np.zeros(n_ord, dtype=np.int64)
    if E:
        np.maximum.at(cap_o, prep.e_order[active], prep.e_n[active])
    ea = np.nonzero(active)[0]
    tails = [np.full(n_ord, src), prep.e_order[ea] + o_node]
    heads = [np.arange(n_ord) + o_node, net.e_group[ea] + g_node]
    caps = [cap_o, prep.e_n[ea]]
    costs = [np.zeros(n_ord, dtype=np.int64), -net.e_weight[ea]]
    # pool edge -> the segment that ends at the lease end (chain entry)
    if net.f_last is not None:
        entry = net.f_last
    else:
        entry = np.array([int(s[-1]) for s in net.f_segs], dtype=np.int64) if len(net.f_pool) else np.zeros(0)
    # a segment whose capacity row is implied by an earlier one of its pool (`binding_segments`) shares that
    # segment's node: on `leases` 56,000 x 10,000 (constant capacities) 10,000 of 632,498 segments remain
    keep = binding_segments(net, s_cap)
    kept = np.nonzero(keep)[0]
    rep = np.maximum.accumulate(np.where(keep, np.arange(S), -1)) if S else np.zeros(0, dtype=np.int64)
    rank = np.cumsum(keep) - 1
    s_map = s_node + rank[rep] if S else np.zeros(0, dtype=np.int64)
    big = int(cap_o.sum()) + 1
    tails.append(net.f_group + g_node)
    heads.append(s_map[entry.astype(np.int64)] if len(entry) else np.zeros(0, dtype=np.int64))
    caps.append(np.full(len(net.f_pool), big, dtype=np.int64))
    costs.append(net.f_cost.astype(np.int64))
    # chain: kept segment -> the previous kept segment of the same pool (all leases start at 0) or sink
    if len(kept):
        prev_same = np.zeros(len(kept), dtype=bool)
        prev_same[1:] = net.s_pool[kept[1:]] == net.s_pool[kept[:-1]]
        nxt = np.where(prev_same, np.arange(len(kept)) - 1 + s_node, snk)
        tails.append(np.arange(len(kept)) + s_node)
        heads.append(nxt)
        caps.append(s_cap[kept])
        costs.append(np.zeros(len(kept), dtype=np.int64))
    supply = int(cap_o.sum())
    tails.append(np.array([src]))
    heads.append(np.array([snk]))
    caps.append(np.array([supply]))
    costs.append(np.array([0]))
    smcf = min_cost_flow.SimpleMinCostFlow()
    t_arr = np.concatenate(tails).astype(np.int32)
    h_arr = np.concatenate(heads).astype(np.int32)
    cost_arr = np.concatenate(costs).astype(np.int64)
    # smaller costs mean fewer cost-scaling phases: divide by their common factor (slot seconds at least)
    unit = int(np.gcd.reduce(cost_arr)) if len(cost_arr) else 1
    unit = max(1, unit)
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(
        t_arr, h_arr, np.concatenate(caps).astype(np.int64), cost_arr // unit
    )
    sup = np.zeros(s_node + len(kept), dtype=np.int64)
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
    value = -float(smcf.optimal_cost() * unit)
    graph = FlowGraph(
        tails=t_arr.astype(np.int64),
        heads=h_arr.astype(np.int64),
        caps=np.concatenate(caps).astype(np.int64),
        costs=cost_arr // unit,
        flows=np.asarray(flows, dtype=np.int64),
        nodes=int(s_node + len(kept)),
        unit=unit,
        sink=snk,
        g_node=g_node,
        s_node=s_node,
        s_map=s_map.astype(np.int64),
    )
    return Relaxation(
        x=x,
        y=y,
        value=value,
        method="mcf",
        solve_seconds=time.perf_counter() - t0,
        extra={"mcf_solve": time.perf_counter() - t1, "arcs": float(len(t_arr))},
        graph=graph,
    )


@dataclass
class LpArrays:
    """The time-indexed LP as sparse arrays: columns (active order edges, then pool edges), rows (orders
    with more than one edge, groups, then the capacity segments `seg_rows` that can bind), maximise obj.x
    (fen per device-hour x slots / 3600 units)."""

    active: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    obj: np.ndarray
    row_lo: np.ndarray
    row_hi: np.ndarray
    mat: Any  # scipy.sparse CSR matrix
    order_rows: int
    groups: int
    segments: int  # segment rows in the LP (len(seg_rows))
    seg_rows: np.ndarray | None = None  # segment of each segment row, in row order (None: every segment)


def binding_segments(net: Network, caps: np.ndarray) -> np.ndarray:
    """Segments whose capacity row can bind (mask); the others are implied by an earlier row of their pool.

    Along a pool's segments, a breakpoint where no pool edge starts only ends leases: every lease running
    after it ran before it, so the load can only fall. In a run of segments from one that some lease starts
    in, a row is implied by the run's lowest capacity so far when its own capacity is not lower. On
    `windows` 7,000 x 1,200 this keeps 10,254 of 25,159 segment rows (the feasible set is the same)."""
    S = len(net.s_pool)
    if not S:
        return np.zeros(0, dtype=bool)
    H = int(max(int(net.s_hi.max()), 0)) + 1
    starts = np.unique(net.f_pool * H + net.g_start[net.f_group])
    head = np.ones(S, dtype=bool)
    head[1:] = net.s_pool[1:] != net.s_pool[:-1]
    head |= np.isin(net.s_pool * H + net.s_lo, starts)
    run = np.cumsum(head)
    big = float(caps.max()) + 1.0
    v = caps.astype(np.float64) - run * big  # each run below every earlier one: one running minimum suffices
    low = np.minimum.accumulate(v)
    keep = head.copy()
    keep[1:] |= v[1:] < low[:-1]
    return keep


def lp_arrays(net: Network) -> LpArrays:
    """Assemble the time-indexed aggregated LP (any start slots, SCU orders exact) as sparse arrays."""
    import scipy.sparse as sp

    prep = net.prep
    active = np.nonzero(net.e_group >= 0)[0]
    A, F = len(active), len(net.f_pool)
    seg_rows = np.nonzero(binding_segments(net, net.s_cap))[0]
    S = len(seg_rows)
    scale = 1.0 / 3600.0
    lb = np.zeros(A + F)
    ub = np.concatenate([prep.e_n[active].astype(np.float64), np.full(F, np.inf)])
    obj = np.concatenate([net.e_weight[active] * scale, -net.f_cost * scale]).astype(np.float64)
    # order rows (orders with more than one active edge): sum_e x_e / n_e <= 1
    eo = prep.e_order[active]
    multi = np.bincount(eo, minlength=prep.n_orders) > 1
    sel = np.nonzero(multi[eo])[0]
    o_row = np.cumsum(multi) - 1
    R1 = int(multi.sum())
    rows = [o_row[eo[sel]]]
    cols = [sel]
    vals = [1.0 / prep.e_n[active][sel]]
    # group rows: sum_e x_e - sum_f y_f = 0
    G = len(net.g_class)
    rows += [R1 + net.e_group[active], R1 + net.f_group]
    cols += [np.arange(A), A + np.arange(F)]
    vals += [np.ones(A), -np.ones(F)]
    # segment rows: sum of y_f over the pool edges covering the segment <= capacity
    if F:
        row_of = np.full(len(net.s_pool), -1, dtype=np.int64)
        row_of[seg_rows] = np.arange(S)
        seg_len = np.array([len(x) for x in net.f_segs], dtype=np.int64)
        r = row_of[np.concatenate(net.f_segs)]
        c = np.repeat(np.arange(F), seg_len)
        rows.append(R1 + G + r[r >= 0])
        cols.append(A + c[r >= 0])
        vals.append(np.ones(int((r >= 0).sum())))
    n_rows = R1 + G + S
    mat = sp.csr_matrix(
        (np.concatenate(vals).astype(np.float64), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_rows, A + F),
    )
    c_lo = np.concatenate([np.full(R1, -np.inf), np.zeros(G), np.full(S, -np.inf)])
    c_hi = np.concatenate([np.ones(R1), np.zeros(G), net.s_cap[seg_rows].astype(np.float64)])
    return LpArrays(active, lb, ub, obj, c_lo, c_hi, mat, R1, G, S, seg_rows)


def segment_duals(net: Network, lp: LpArrays, row_dual: np.ndarray) -> np.ndarray:
    """Dual of every capacity segment from the LP's row duals (0 for a segment whose row was left out)."""
    d = row_dual[lp.order_rows + lp.groups :]
    if lp.seg_rows is None:
        return d.copy()
    mu = np.zeros(len(net.s_pool), dtype=np.float64)
    mu[lp.seg_rows] = d
    return mu


# HiGHS' presolve was half of the LP's time on windows 7,000 x 1,200 (its dependent-equations search; 7.6 CPU s
# with it, 3.8 without, 44k instead of 34k dual simplex iterations) and found little to remove.
LP_PRESOLVE = "off"


def solve_lp(net: Network, *, time_limit: float | None = None) -> Relaxation:
    """Time-indexed aggregated LP with HiGHS' dual simplex (one thread, fixed seed): the general relaxation
    (any start slots, SCU orders exact). The solver is kept on the result, so the repair's re-solves on the
    capacity gangs leave start from this basis (`resolve_lp`). time_limit: HiGHS' simplex iteration limit
    (a deterministic work limit; no caller sets one today)."""
    import highspy

    from matching.mip import _new_highs  # one banner-free HiGHS factory (runtime import: mip imports this module)

    t0 = time.perf_counter()
    lp = lp_arrays(net)
    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("solver", "simplex")
    h.setOptionValue("presolve", LP_PRESOLVE)
    if time_limit:
        h.setOptionValue("simplex_iteration_limit", int(time_limit))
    mat = lp.mat.tocsc()
    model = highspy.HighsLp()
    model.num_col_ = int(mat.shape[1])
    model.num_row_ = int(mat.shape[0])
    model.col_cost_ = lp.obj
    model.col_lower_ = lp.lb
    model.col_upper_ = lp.ub
    model.row_lower_ = lp.row_lo
    model.row_upper_ = lp.row_hi
    model.sense_ = highspy.ObjSense.kMaximize
    model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    model.a_matrix_.start_ = mat.indptr
    model.a_matrix_.index_ = mat.indices
    model.a_matrix_.value_ = mat.data
    h.passModel(model)
    t1 = time.perf_counter()
    return _read_lp(net, lp, h, t0, t1, duals=True)


def _read_lp(net: Network, lp: LpArrays, h: Any, t0: float, t1: float, *, duals: bool) -> Relaxation:
    """Run HiGHS on its current model and read the relaxation (row duals: prices and rents) off it."""
    import highspy

    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"LP relaxation failed: status {h.getModelStatus()}")
    sol = h.getSolution()
    v = np.asarray(sol.col_value, dtype=np.float64)
    A = len(lp.active)
    x = np.zeros(len(net.prep.e_order), dtype=np.float64)
    x[lp.active] = v[:A]
    g0 = lp.order_rows
    # row duals (HiGHS: column dual = cost - A^T row dual): a binding <= row of this maximisation has a dual >= 0
    d = np.asarray(sol.row_dual, dtype=np.float64) if duals else None
    basis = h.getBasis() if duals else None
    return Relaxation(
        x=x,
        y=v[A:],
        value=float(h.getInfo().objective_function_value) * 3600.0,
        method="lp-highs",
        solve_seconds=time.perf_counter() - t0,
        exact_int=False,
        extra={"lp_solve": time.perf_counter() - t1},
        pi=None if d is None else d[g0 : g0 + lp.groups].copy(),
        mu=None if d is None else segment_duals(net, lp, d),
        solver=h,
        lp=lp,
        basis=basis,
    )


def _add_binding_rows(net: Network, lp: LpArrays, h: Any, caps: np.ndarray) -> None:
    """Add to the solver (and lp) the segment rows that can bind under the capacities caps but were left
    out as implied under the first ones (a gang placed late in a pool's horizon lowers a later segment)."""
    import scipy.sparse as sp

    if lp.seg_rows is None:
        return
    need = binding_segments(net, caps)
    need[lp.seg_rows] = False
    new = np.nonzero(need)[0]
    if not len(new):
        return
    A = len(lp.active)
    seg_len = np.array([len(x) for x in net.f_segs], dtype=np.int64)
    all_s = np.concatenate(net.f_segs) if len(net.f_segs) else np.zeros(0, dtype=np.int64)
    all_f = np.repeat(np.arange(len(net.f_pool)), seg_len)
    pos = np.full(len(net.s_pool), -1, dtype=np.int64)
    pos[new] = np.arange(len(new))
    r = pos[all_s]
    block = sp.csr_matrix(
        (np.ones(int((r >= 0).sum())), (r[r >= 0], A + all_f[r >= 0])), shape=(len(new), lp.mat.shape[1])
    )
    lo = np.full(len(new), -np.inf)
    hi = caps[new].astype(np.float64)
    h.addRows(
        len(new), lo, hi, int(block.nnz), block.indptr[:-1].astype(np.int32), block.indices.astype(np.int32), block.data
    )
    lp.mat = sp.vstack([lp.mat, block], format="csr")
    lp.row_lo = np.concatenate([lp.row_lo, lo])
    lp.row_hi = np.concatenate([lp.row_hi, hi])
    lp.seg_rows = np.concatenate([lp.seg_rows, new])
    lp.segments += len(new)


def resolve_lp(net: Network, rel: Relaxation, edge_mask: np.ndarray, free: np.ndarray) -> Relaxation | None:
    """The LP again with only the order edges in edge_mask and the capacity `free`, warm-started from the
    basis rel's solver holds (None when rel was not solved as an LP here). On `windows` 7,000 x 1,200 a
    re-solve on the capacity gangs leave takes 1.1 CPU s from the basis, 7.7 cold."""
    h, lp = rel.solver, rel.lp
    if h is None or lp is None:
        return None
    t0 = time.perf_counter()
    A = len(lp.active)
    cols = np.arange(A, dtype=np.int32)
    ub = np.where(edge_mask[lp.active], lp.ub[:A], 0.0)
    h.changeColsBounds(A, cols, lp.lb[:A], ub)
    caps = segment_caps(net, free)
    _add_binding_rows(net, lp, h, caps)
    S = lp.segments
    n_rows = lp.order_rows + lp.groups + S
    rows = np.arange(n_rows - S, n_rows, dtype=np.int32)
    seg = np.arange(S) if lp.seg_rows is None else lp.seg_rows
    h.changeRowsBounds(S, rows, lp.row_lo[n_rows - S :], caps[seg].astype(np.float64))
    out = _read_lp(net, lp, h, t0, time.perf_counter(), duals=False)
    out.solver = None  # the basis moved on; the caller's relaxation keeps the solver
    out.lp = None
    return out


# Step of the price pass's perturbation, in devices: small enough that the LP's value stays linear in it (on
# `windows` 2,000 x 350, 1e-2 crossed a breakpoint and the check below refused it; 1e-3 to 1e-5 gave the same
# duals), large against HiGHS' 1e-7 feasibility tolerance. The pass retries once with a step 100x smaller.
MIN_DUAL_STEP = 1e-3


@dataclass
class MinDuals:
    """Row duals of the LP re-solved with its right-hand side moved by `step`: the minimum optimal duals."""

    pi: np.ndarray  # per group (0 for a group with no order edge)
    mu: np.ndarray  # per capacity segment
    step: float
    iterations: int


def min_duals(net: Network, rel: Relaxation) -> MinDuals | None:
    """The optimal duals of the time-indexed LP that minimise sum pi + sum mu (buyer-optimal prices), from a
    warm re-solve instead of a second LP; None when rel holds no solver or the check fails at every step.

    The LP's value V is concave and piecewise linear in its right-hand side b; for a small step t > 0 along d
    the duals of the LP at b + t d are exactly the optimal duals at b that minimise d.y (the directional
    derivative). With d = 1 on every group row (a sliver of free supply in each group) and every capacity row,
    that is min sum pi + sum mu over the optimal duals, the second pass of the dual LP. The re-solve starts
    from the first optimum's basis (the repair's re-solves moved the solver on; rows they added are implied
    under the first capacities and enter as basic), and is checked: V(b + t d) - V(b) = t d.y holds exactly
    when y is optimal at b (weak duality gives >=), else the step crossed a breakpoint. Afterwards the
    solver holds the first LP again (bounds restored; its basis is the perturbed optimum's)."""
    import highspy

    h, lp, basis = rel.solver, rel.lp, rel.basis
    if h is None or lp is None or basis is None:
        return None
    A = len(lp.active)
    G, R1, S = lp.groups, lp.order_rows, lp.segments
    seg = np.arange(S) if lp.seg_rows is None else lp.seg_rows
    nonempty = np.zeros(G, dtype=bool)
    nonempty[net.e_group[lp.active]] = True  # an empty group row moved off 0 would be infeasible
    g_rows = (R1 + np.nonzero(nonempty)[0]).astype(np.int32)
    s_rows = np.arange(R1 + G, R1 + G + S, dtype=np.int32)
    s_lo = np.full(S, -np.inf)
    s_cap = net.s_cap[seg].astype(np.float64)
    h.changeColsBounds(A, np.arange(A, dtype=np.int32), lp.lb[:A], lp.ub[:A])
    v0 = rel.value / 3600.0
    out = None
    for step in (MIN_DUAL_STEP, MIN_DUAL_STEP / 100):
        h.changeRowsBounds(len(g_rows), g_rows, np.full(len(g_rows), step), np.full(len(g_rows), step))
        h.changeRowsBounds(S, s_rows, s_lo, s_cap + step)
        start = highspy.HighsBasis()
        extra = R1 + G + S - len(basis.row_status)
        start.col_status = list(basis.col_status)
        start.row_status = list(basis.row_status) + [highspy.HighsBasisStatus.kBasic] * extra
        start.valid = True
        h.setBasis(start)
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            continue
        d = np.asarray(h.getSolution().row_dual, dtype=np.float64)
        pi = np.where(nonempty, d[R1 : R1 + G], 0.0)
        dy = float(pi.sum() + d[R1 + G : R1 + G + S].sum())
        excess = float(h.getInfo().objective_function_value) - v0 - step * dy
        if abs(excess) <= 1e-6 * step * max(1.0, abs(dy)) + 1e-9 * max(1.0, abs(v0)):
            it = int(h.getInfo().simplex_iteration_count)
            out = MinDuals(pi, segment_duals(net, lp, d), step, it)
            break
    h.changeRowsBounds(len(g_rows), g_rows, np.zeros(len(g_rows)), np.zeros(len(g_rows)))
    h.changeRowsBounds(S, s_rows, s_lo, s_cap)
    return out


def mcf_is_exact(net: Network) -> bool:
    """True when every order asks the same device count on all its active edges (then the order node's
    capacity expresses sum_e x_e / n_e <= 1 exactly); SCU orders spanning models differ per model."""
    prep = net.prep
    act = net.e_group >= 0
    if not act.any():
        return True
    eo, en = prep.e_order[act], prep.e_n[act]
    hi = np.zeros(prep.n_orders, dtype=np.int64)
    lo = np.full(prep.n_orders, np.iinfo(np.int64).max, dtype=np.int64)
    np.maximum.at(hi, eo, en)
    np.minimum.at(lo, eo, en)
    used = np.zeros(prep.n_orders, dtype=bool)
    used[eo] = True
    return bool((hi[used] == lo[used]).all())


def relax(net: Network) -> Relaxation:
    """The relaxation: min-cost flow when every lease starts now and it is exact, else the time-indexed LP."""
    if net.all_now and mcf_is_exact(net):
        return solve_mcf(net)
    return solve_lp(net)
