"""Eligibility by class: supply aggregated into (region, model) classes, each order mapped to the classes
and start slots it may use, never to individual pools (order x pool is never enumerated).

The result is a set of flat numpy arrays (`Prepared`) that the relaxation, the placement, the prices and
the baselines share, so that every method sees the same feasibility rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

import numpy as np

from matching.model import Market, Order, Pool

INF_TIME = 2**62


@dataclass
class Prepared:
    """Arrays describing pools, classes, free capacity per slot and order-class-start edges."""

    market: Market
    slot0: int
    slot_seconds: int
    horizon: int
    # pools
    pool_class: np.ndarray  # [P] class index
    pool_ask: np.ndarray  # [P] fen per device-hour
    pool_site: np.ndarray  # [P] site index
    pool_region: np.ndarray  # [P] region index
    pool_model: np.ndarray  # [P] model index
    pool_min_lease_slots: np.ndarray  # [P]
    pool_billing: list[frozenset[str]]
    pool_node_sizes: list[np.ndarray]  # [P] devices of each node of the pool
    free: np.ndarray  # [P, H] free devices per slot (0 outside the offer window)
    # classes
    classes: list[tuple[str, str]]
    class_pools: list[np.ndarray]  # pools of each class, sorted by (ask, -devices, index)
    class_min_ask: np.ndarray
    class_max_pool: np.ndarray  # largest free (at slot 0..H min) pool size, an upper bound
    regions: list[str]
    models: list[str]
    sites: list[str]
    model_scu: dict[str, Decimal | None]
    # orders
    order_lease: np.ndarray  # [O] lease length in slots
    order_need_min: dict[int, int]
    order_node: np.ndarray  # [O] True for a gang that must sit on one node (colocation "node")
    # edges (order, class, start slot)
    e_order: np.ndarray
    e_class: np.ndarray
    e_start: np.ndarray
    e_n: np.ndarray  # devices for the order on this class's model
    e_need: np.ndarray  # minimum devices to count as filled (n if all-or-nothing)
    e_limit: np.ndarray  # buyer limit, fen per device-hour on this model
    e_gang: np.ndarray  # smallest piece a pool must hold (relaxation gang size)
    order_edges: list[np.ndarray]  # edge indices per order
    reasons: dict[int, str]  # order index -> reason it has no edge
    limits_hit: list[str] = field(default_factory=list)  # solver steps stopped by their work limit
    proven_bound: float = 0.0  # integer model's bound (cost units) when an exact step proved one, else 0

    @property
    def n_orders(self) -> int:
        """Number of orders in the snapshot."""
        return len(self.market.orders)


def lease_slots(duration_seconds: int, slot_seconds: int) -> int:
    """Whole slots a lease occupies (ceil)."""
    return max(1, -(-duration_seconds // slot_seconds))


def devices_for(order: Order, scu: Decimal | None) -> int | None:
    """Devices an order needs on a model: its device count, or ceil(SCU / scu(model))."""
    if order.quantity_devices is not None:
        return order.quantity_devices
    if scu is None or order.quantity_scu is None:
        return None
    return int((order.quantity_scu / scu).to_integral_value(rounding=ROUND_CEILING))


def limit_for(order: Order, model: str, scu: Decimal | None) -> int | None:
    """Buyer limit on a model in fen per device-hour: per-model limit, else per-SCU limit x scu (floor)."""
    if model in order.limits:
        return order.limits[model]
    if order.limit_fen_per_scu_hour is not None and scu is not None:
        return int(order.limit_fen_per_scu_hour * scu)  # floor: never above what the buyer offered
    return None


def model_acceptable(order: Order, pool: Pool) -> bool:
    """Order constraints on a model (list, families, memory, stack, domestic) against a pool's model."""
    if order.models and pool.model not in order.models:
        return False
    if order.families and pool.family not in order.families:
        return False
    if pool.memory_gb < order.min_memory_gb:
        return False
    if order.stack is not None and pool.stack != order.stack:
        return False
    return not (order.domestic_only and not pool.domestic)


def region_allowed(order: Order, region: str, latency: dict[str, dict[str, int]]) -> bool:
    """Residency (allowed regions) and latency from the home region; unknown latency is not allowed."""
    if order.regions and region not in order.regions:
        return False
    if order.max_latency_ms is None or order.home_region is None:
        return True
    if region == order.home_region:
        lat = latency.get(region, {}).get(region, 0)
    else:
        lat = latency.get(order.home_region, {}).get(region, -1)
        if lat < 0:
            lat = latency.get(region, {}).get(order.home_region, -1)
        if lat < 0:
            return False
    return lat <= order.max_latency_ms


def start_candidates(order: Order, market: Market, slot0: int) -> list[int]:
    """Candidate start slot indices: [0] if the start window is open, else up to max_start_slots later."""
    slot = market.slot_seconds
    earliest = order.start_earliest
    latest = order.start_latest
    if latest is not None and latest < slot0:
        return []
    if earliest is None or earliest <= market.now:
        return [0]
    k0 = -(-(earliest - slot0) // slot)
    k1 = k0 + market.max_start_slots - 1
    if latest is not None:
        k1 = min(k1, (latest - slot0) // slot)
    return list(range(k0, k1 + 1))


def _free_matrix(market: Market, slot0: int, horizon: int) -> np.ndarray:
    """Free devices per pool and slot: devices minus reservations overlapping the slot, 0 outside window."""
    slot = market.slot_seconds
    P = len(market.pools)
    free = np.zeros((P, horizon), dtype=np.int64)
    starts = slot0 + slot * np.arange(horizon, dtype=np.int64)
    ends = starts + slot
    for i, p in enumerate(market.pools):
        row = np.full(horizon, p.devices, dtype=np.int64)
        ws = p.window_start if p.window_start is not None else -INF_TIME
        we = p.window_end if p.window_end is not None else INF_TIME
        row[(starts < ws) | (ends > we)] = 0
        for r in p.reserved:
            if r.devices and r.end > slot0:
                row[(starts < r.end) & (ends > r.start)] -= r.devices
        free[i] = np.maximum(row, 0)
    return free


def prepare(market: Market) -> Prepared:
    """Aggregate supply into classes and map orders to compatible (class, start) edges."""
    slot = market.slot_seconds
    slot0 = market.now - market.now % slot
    orders = market.orders
    pools = market.pools
    n_ord = len(orders)
    lease = np.array([lease_slots(o.duration_seconds, slot) for o in orders], dtype=np.int64)
    starts = [start_candidates(o, market, slot0) for o in orders]
    horizon = 1
    for i in range(n_ord):
        if starts[i]:
            horizon = max(horizon, starts[i][-1] + int(lease[i]))
    free = _free_matrix(market, slot0, horizon)

    regions = sorted({p.region for p in pools})
    models = sorted({p.model for p in pools})
    sites = sorted({p.site for p in pools})
    r_ix = {r: i for i, r in enumerate(regions)}
    m_ix = {m: i for i, m in enumerate(models)}
    s_ix = {s: i for i, s in enumerate(sites)}
    class_ix: dict[tuple[str, str], int] = {}
    classes: list[tuple[str, str]] = []
    pool_class = np.zeros(len(pools), dtype=np.int64)
    for i, p in enumerate(pools):
        key = (p.region, p.model)
        if key not in class_ix:
            class_ix[key] = len(classes)
            classes.append(key)
        pool_class[i] = class_ix[key]
    pool_ask = np.array([p.ask_fen for p in pools], dtype=np.int64)
    pool_min_lease = np.array([-(-p.min_lease_seconds // slot) for p in pools], dtype=np.int64)
    C = len(classes)
    members: list[list[int]] = [[] for _ in range(C)]
    for i in range(len(pools)):
        members[int(pool_class[i])].append(i)
    class_pools = [
        np.array(sorted(ms, key=lambda i: (pools[i].ask_fen, -pools[i].devices, i)), dtype=np.int64) for ms in members
    ]
    class_min_ask = np.array([pool_ask[cp].min() for cp in class_pools], dtype=np.int64)
    peak = free.max(axis=1) if horizon else np.zeros(len(pools), dtype=np.int64)
    class_max_pool = np.array([peak[cp].max() for cp in class_pools], dtype=np.int64)
    # per class and site: peak devices, for site co-location of multi-pool gangs
    class_site_peak: list[dict[int, int]] = [{} for _ in range(C)]
    for i, p in enumerate(pools):
        d = class_site_peak[int(pool_class[i])]
        d[s_ix[p.site]] = d.get(s_ix[p.site], 0) + int(peak[i])
    node_sizes = [np.array(p.node_sizes(), dtype=np.int64) for p in pools]
    pool_max_node = np.array([min(int(ns.max()) if len(ns) else 0, int(peak[i])) for i, ns in enumerate(node_sizes)])
    class_max_node = np.array([pool_max_node[cp].max() for cp in class_pools], dtype=np.int64)
    class_max_site = np.array([max(d.values()) if d else 0 for d in class_site_peak], dtype=np.int64)
    class_billing = [frozenset().union(*(pools[i].billing_modes for i in cp)) for cp in class_pools]
    class_min_lease = np.array([pool_min_lease[cp].min() for cp in class_pools], dtype=np.int64)
    # a slot-availability mask per class: any pool of the class has capacity in that slot
    class_any = np.zeros((C, horizon), dtype=bool)
    for c, cp in enumerate(class_pools):
        class_any[c] = free[cp].max(axis=0) > 0
    model_pool: dict[str, Pool] = {}
    for p in pools:
        model_pool.setdefault(p.model, p)
    model_scu = {m: model_pool[m].scu for m in models}

    edges, need_min = _edges(
        orders,
        market,
        models,
        regions,
        model_pool,
        model_scu,
        class_ix,
        starts,
        lease,
        horizon,
        class_min_ask,
        class_billing,
        class_min_lease,
        class_max_pool,
        class_max_site,
        class_any,
        class_max_node,
    )
    e_order, e_class, e_start, e_n, e_need, e_limit, e_gang = edges
    reasons: dict[int, str] = {}
    has = np.zeros(n_ord, dtype=bool)
    has[e_order] = True
    for oi in np.nonzero(~has)[0].tolist():
        reasons[oi] = _no_edge_reason(
            orders[oi],
            market,
            models,
            regions,
            model_pool,
            model_scu,
            class_ix,
            starts[oi],
            int(lease[oi]),
            horizon,
            class_min_ask,
            class_billing,
            class_min_lease,
            class_max_pool,
            class_max_site,
            class_any,
            class_max_node,
        )
    eo = e_order
    order_edges: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n_ord
    if len(eo):
        bounds = np.searchsorted(eo, np.arange(n_ord + 1))
        idx = np.arange(len(eo), dtype=np.int64)
        order_edges = [idx[bounds[i] : bounds[i + 1]] for i in range(n_ord)]
    return Prepared(
        market=market,
        slot0=slot0,
        slot_seconds=slot,
        horizon=horizon,
        pool_class=pool_class,
        pool_ask=pool_ask,
        pool_site=np.array([s_ix[p.site] for p in pools], dtype=np.int64),
        pool_region=np.array([r_ix[p.region] for p in pools], dtype=np.int64),
        pool_model=np.array([m_ix[p.model] for p in pools], dtype=np.int64),
        pool_min_lease_slots=pool_min_lease,
        pool_billing=[frozenset(p.billing_modes) for p in pools],
        pool_node_sizes=node_sizes,
        free=free,
        classes=classes,
        class_pools=class_pools,
        class_min_ask=class_min_ask,
        class_max_pool=class_max_pool,
        regions=regions,
        models=models,
        sites=sites,
        model_scu=model_scu,
        order_lease=lease,
        order_need_min=need_min,
        order_node=np.array([o.colocation == "node" for o in orders], dtype=bool),
        e_order=eo,
        e_class=e_class,
        e_start=e_start,
        e_n=e_n,
        e_need=e_need,
        e_limit=e_limit,
        e_gang=e_gang,
        order_edges=order_edges,
        reasons=reasons,
    )


def _order_models(o: Order, models: list[str], model_pool: dict[str, Pool], memo: dict[tuple, list[int]]) -> list[int]:
    """Indices of the models an order accepts (list, families, memory, stack, domestic), memoised."""
    key = (o.models, o.families, o.min_memory_gb, o.stack, o.domestic_only)
    ms = memo.get(key)
    if ms is None:
        ms = [i for i, m in enumerate(models) if model_acceptable(o, model_pool[m])]
        memo[key] = ms
    return ms


def _edges(
    orders: tuple[Order, ...],
    market: Market,
    models: list[str],
    regions: list[str],
    model_pool: dict[str, Pool],
    model_scu: dict[str, Decimal | None],
    class_ix: dict[tuple[str, str], int],
    starts: list[list[int]],
    lease: np.ndarray,
    horizon: int,
    class_min_ask: np.ndarray,
    class_billing: list[frozenset[str]],
    class_min_lease: np.ndarray,
    class_max_pool: np.ndarray,
    class_max_site: np.ndarray,
    class_any: np.ndarray,
    class_max_node: np.ndarray,
) -> tuple[tuple[np.ndarray, ...], dict[int, int]]:
    """Order-class-start edges with numpy: per (order, model) rows in Python, the region and class
    filters as array operations. Edges come sorted by (order, model, region, start)."""
    R = len(regions)
    M = len(models)
    class_of = np.full((M, R), -1, dtype=np.int64)
    r_ix = {r: i for i, r in enumerate(regions)}
    for (r, m), c in class_ix.items():
        class_of[models.index(m), r_ix[r]] = c
    m_memo: dict[tuple, list[int]] = {}
    r_memo: dict[tuple, int] = {}
    r_pats: list[np.ndarray] = []
    bills = sorted({o.billing_mode for o in orders}.union(*class_billing))
    b_ix = {b: i for i, b in enumerate(bills)}
    class_bill = np.zeros((len(class_billing), max(1, len(bills))), dtype=bool)
    for c, bs in enumerate(class_billing):
        for b in bs:
            class_bill[c, b_ix[b]] = True
    om_o: list[int] = []
    om_m: list[int] = []
    om_lim: list[int] = []
    om_n: list[int] = []
    om_need: list[int] = []
    om_gang: list[int] = []
    o_rpat = np.zeros(len(orders), dtype=np.int64)
    o_bill = np.zeros(len(orders), dtype=np.int64)
    o_site = np.zeros(len(orders), dtype=bool)
    o_node = np.array([o.colocation == "node" for o in orders], dtype=bool)
    need_min: dict[int, int] = {}
    for oi, o in enumerate(orders):
        if not starts[oi]:
            continue
        rkey = (o.regions, o.home_region, o.max_latency_ms)
        rp = r_memo.get(rkey)
        if rp is None:
            rp = len(r_pats)
            r_pats.append(np.array([region_allowed(o, r, market.latency_ms) for r in regions], dtype=bool))
            r_memo[rkey] = rp
        o_rpat[oi] = rp
        o_bill[oi] = b_ix[o.billing_mode]
        o_site[oi] = o.colocation == "site" and o.same_model
        K = o.max_pools
        for mi in _order_models(o, models, model_pool, m_memo):
            m = models[mi]
            lim = limit_for(o, m, model_scu[m])
            if lim is None:
                continue
            n_opt = devices_for(o, model_scu[m])
            if n_opt is None:
                continue
            need = n_opt if o.all_or_nothing else min(n_opt, o.min_fill_devices if o.quantity_scu is None else 1)
            om_o.append(oi)
            om_m.append(mi)
            om_lim.append(lim)
            om_n.append(n_opt)
            om_need.append(need)
            # Smallest piece a pool must hold: the whole need when the order takes one pool; with K > 1
            # pieces may be any size (only their count is capped), so 1 keeps the relaxation a valid bound.
            om_gang.append(need if K == 1 else 1)
            need_min[oi] = need
    empty = np.zeros(0, dtype=np.int64)
    if not om_o or not r_pats:
        return (empty,) * 7, need_min
    a_o = np.array(om_o, dtype=np.int64)
    a_m = np.array(om_m, dtype=np.int64)
    a_lim = np.array(om_lim, dtype=np.int64)
    a_need = np.array(om_need, dtype=np.int64)
    a_gang = np.array(om_gang, dtype=np.int64)
    pats = np.stack(r_pats)
    allowed = pats[o_rpat[a_o]] & (class_of[a_m] >= 0)  # [rows, R]
    row, reg = np.nonzero(allowed)
    cls = class_of[a_m[row], reg]
    o_of = a_o[row]
    ok = a_lim[row] >= class_min_ask[cls]
    ok &= class_bill[cls, o_bill[o_of]]
    ok &= class_min_lease[cls] <= lease[o_of]
    ok &= class_max_pool[cls] >= a_gang[row]
    ok &= ~o_site[o_of] | (class_max_site[cls] >= a_need[row])
    ok &= ~o_node[o_of] | (class_max_node[cls] >= a_need[row])
    row, reg, cls, o_of = row[ok], reg[ok], cls[ok], o_of[ok]
    # expand by candidate start slots
    ns = np.array([len(s) for s in starts], dtype=np.int64)
    s_off = np.concatenate([[0], np.cumsum(ns)])
    s_flat = np.array([k for s in starts for k in s], dtype=np.int64)
    rep = ns[o_of]
    row, reg, cls, o_of = (np.repeat(v, rep) for v in (row, reg, cls, o_of))
    within = np.arange(len(o_of)) - np.repeat(np.cumsum(rep) - rep, rep)
    k = s_flat[s_off[o_of] + within]
    L = lease[o_of]
    fits = k + L <= horizon
    bad = np.concatenate([np.zeros((class_any.shape[0], 1), dtype=np.int64), np.cumsum(~class_any, axis=1)], axis=1)
    kk = np.minimum(k, horizon)
    ke = np.minimum(k + L, horizon)
    fits &= (bad[cls, ke] - bad[cls, kk]) == 0
    row, reg, cls, o_of, k = row[fits], reg[fits], cls[fits], o_of[fits], k[fits]
    order = np.lexsort((k, reg, a_m[row], o_of))
    row, cls, o_of, k = row[order], cls[order], o_of[order], k[order]
    edges = (o_of, cls, k, np.array(om_n, dtype=np.int64)[row], a_need[row], a_lim[row], a_gang[row])
    return tuple(np.ascontiguousarray(v, dtype=np.int64) for v in edges), need_min


def _no_edge_reason(
    o: Order,
    market: Market,
    models: list[str],
    regions: list[str],
    model_pool: dict[str, Pool],
    model_scu: dict[str, Decimal | None],
    class_ix: dict[tuple[str, str], int],
    starts: list[int],
    L: int,
    horizon: int,
    class_min_ask: np.ndarray,
    class_billing: list[frozenset[str]],
    class_min_lease: np.ndarray,
    class_max_pool: np.ndarray,
    class_max_site: np.ndarray,
    class_any: np.ndarray,
    class_max_node: np.ndarray,
) -> str:
    """Why an order got no edge (the last rule that refused it, checked in the documented order)."""
    if not starts:
        return "start_window_passed"
    ms = [
        (m, lim)
        for m in models
        if (lim := limit_for(o, m, model_pool[m].scu)) is not None and model_acceptable(o, model_pool[m])
    ]
    rs = [r for r in regions if region_allowed(o, r, market.latency_ms)]
    if not ms:
        return "no_acceptable_model"
    if not rs:
        return "no_allowed_region"
    K = o.max_pools
    why = "no_supply_in_allowed_classes"
    for m, lim in ms:
        n = devices_for(o, model_scu[m])
        if n is None:
            continue
        need = n if o.all_or_nothing else min(n, o.min_fill_devices if o.quantity_scu is None else 1)
        gang = -(-need // K)
        for r in rs:
            if (r, m) not in class_ix:
                continue
            c = class_ix[(r, m)]
            if lim < class_min_ask[c]:
                why = "limit_below_asks"
                continue
            if o.billing_mode not in class_billing[c]:
                why = "billing_mode"
                continue
            if class_min_lease[c] > L:
                why = "below_min_lease"
                continue
            if class_max_pool[c] < gang or (o.colocation == "site" and o.same_model and class_max_site[c] < need):
                why = "no_pool_big_enough"
                continue
            if o.colocation == "node" and class_max_node[c] < need:
                why = "no_node_big_enough"
                continue
            for k in starts:
                if k + L > horizon or not class_any[c, k : k + L].all():
                    why = "outside_offer_windows"
    return why
