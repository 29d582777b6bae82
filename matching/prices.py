"""Clearing prices: minimum competitive-equilibrium prices from the duals of the aggregated LP, turned into
integer fen per allocation with an exact exchange fee.

Dual of the relaxation (cost unit: fen per device for the whole lease):
    min  sum_o u_o + sum_s cap_s mu_s
    s.t. u_o / n_oe + pi_j >= w_e          for every order edge e = (o, group j)   (buyer side)
         pi_j - sum_{s in f} mu_s <= a_f   for every pool edge f = (group j, pool)   (supply side)
         u >= 0, mu >= 0, pi_j >= the cheapest ask cost of group j (keeps optimality: raising pi only
         loosens the buyer rows, and every supply row allows it).
pi_j is the price of one device of group j = (class, lease, gang, start) for the lease; mu_s is the rent of
one device of a pool in capacity segment s. Pass 1 is the optimum OPT (known exactly from the min-cost
flow when it is exact, else solved); pass 2 minimises sum pi + sum mu subject to the dual constraints and
sum u + sum cap mu <= OPT: the buyer-optimal (minimum) equilibrium prices. On every pair the LP uses,
complementary slackness gives pi_j = a_f + rent, so buyers and providers see the same price.

Integer rule per allocation (q = device-hours = devices x lease slots x slot_seconds / 3600):
    provider price Ps = min(limit, max(ask, ceil(ask + rent per device-hour)))
    buyer price    Pb = min(limit, max(Ps, ceil(pi per device-hour), ceil(Ps x (1 + fee_bps / 10000))))
    provider_receives = ceil(Ps x q);  buyer_pays = floor(Pb x q);  fee = buyer_pays - provider_receives
so IR holds on both sides by construction (Pb <= limit, Ps >= ask, amounts rounded towards each side)
and buyer_pays == provider_receives + fee exactly. Whenever ceil(pi) > limit (a gang integrality gap) or
ask > the equilibrium provider price, the difference x q is reported as uplift.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import numpy as np

from matching.model import Allocation, ClassPrice
from matching.placement import Piece
from matching.relaxation import NODE_GANG, SITE_K_RADIX, FlowGraph, Network, Relaxation, min_duals

PRICING_RULE = (
    "min-CE duals of the aggregated LP (pass 2: min sum pi + sum mu at optimal dual value); "
    "provider ceil(ask+rent), buyer max(ceil(pi), provider x (1+fee)) capped at limit; "
    "amounts ceil for provider, floor for buyer; fee = difference"
)
FALLBACK_RULE = "pay-as-ask: provider at ask, buyer at ask x (1+fee) capped at limit (no duals)"
POTENTIALS_RULE = (
    "min-CE prices from node potentials of the min-cost flow (minus shortest-path distances from the sink on "
    "its residual graph); provider ceil(ask+rent), buyer max(ceil(pi), provider x (1+fee)) capped at limit; "
    "amounts ceil for provider, floor for buyer; fee = difference"
)
LP_DUALS_RULE = (
    "CE prices from the row duals of the time-indexed LP's optimal basis (group rows: prices, segment rows: "
    "rents; a group's price floored at its cheapest ask); provider ceil(ask+rent), buyer max(ceil(pi), "
    "provider x (1+fee)) capped at limit; amounts ceil for provider, floor for buyer; fee = difference"
)
LP_MIN_DUALS_RULE = (
    "min-CE prices of the time-indexed LP: the row duals of its warm re-solve with every group row and capacity "
    "row moved by a small step (the optimal duals minimising sum pi + sum mu; checked V(b+t) - V(b) = t (sum pi "
    "+ sum mu)), a group's price floored at its cheapest ask; provider ceil(ask+rent), buyer max(ceil(pi), "
    "provider x (1+fee)) capped at limit; amounts ceil for provider, floor for buyer; fee = difference"
)
PRICES_METHODS = ("potentials", "lp-min-duals", "lp-duals", "dual-lp", "pay-as-ask", "none")


@dataclass
class Duals:
    """Group prices pi (per device per lease, fen) and segment rents mu; ok=False when not computed."""

    pi: np.ndarray
    mu: np.ndarray
    ok: bool
    seconds: float
    opt: float = 0.0


def compute_duals(
    net: Network,
    opt_units: float | None = None,
    *,
    time_limit: float | None = 30.0,
    minimum: bool = True,
    floors: bool = True,
) -> Duals:
    """Solve the dual LP (GLOP); pass 2 picks the minimum equilibrium prices among optimal duals.

    The LP is handed to GLOP as sparse arrays in one call (building it row by row through pywraplp was a
    third of the price time on windows 2,000 x 350). floors=False leaves the price of a group with order
    edges free (the plain dual of the relaxation; tests compare `relaxation.min_duals` with it)."""
    t0 = time.perf_counter()
    prep = net.prep
    G = len(net.g_class)
    S = len(net.s_pool)
    active = np.nonzero(net.e_group >= 0)[0]
    if not len(active):
        return Duals(np.zeros(G), np.zeros(S), True, 0.0)
    scale = 1.0 / 3600.0
    w = net.e_weight[active].astype(np.float64) * scale
    a = net.f_cost.astype(np.float64) * scale
    F = len(net.f_pool)
    orders, u_of = np.unique(prep.e_order[active], return_inverse=True)
    U = len(orders)
    # a group's price is never below the cheapest ask it can reach (inframarginal: pi = min ask)
    floor = ask_floor(net)
    cap = net.s_cap.astype(np.float64)
    A = len(active)
    seg_len = np.array([len(x) for x in net.f_segs], dtype=np.int64)
    # rows: buyer rows (one per active edge), supply rows (one per pool edge), then the optimality row
    rows = [np.arange(A), np.arange(A), A + np.arange(F), A + np.repeat(np.arange(F), seg_len)]
    cols = [u_of.reshape(-1), U + net.e_group[active], U + net.f_group, U + G + np.concatenate([*net.f_segs, []])]
    vals = [1.0 / prep.e_n[active], np.ones(A), np.ones(F), -np.ones(int(seg_len.sum()))]
    lo_r = [w, np.full(F, -np.inf)]
    hi_r = [np.full(A, np.inf), a]

    def solve(pass2: bool, opt: float) -> tuple[np.ndarray, np.ndarray] | None:
        import scipy.sparse as sp  # the array interface of OR-Tools' model builder takes a scipy CSR matrix
        from ortools.linear_solver.python import model_builder_helper as mbh

        r, c, v, lo, hi = list(rows), list(cols), list(vals), list(lo_r), list(hi_r)
        if pass2:
            r += [np.full(U + S, A + F)]
            c += [np.concatenate([np.arange(U), U + G + np.arange(S)])]
            v += [np.concatenate([np.ones(U), cap])]
            lo += [np.array([-np.inf])]
            hi += [np.array([opt * (1 + 1e-7) + 1e-6])]  # LP tolerance of a primal optimum
            obj = np.concatenate([np.zeros(U), np.ones(G + S)])
        else:
            obj = np.concatenate([np.ones(U), np.zeros(G), cap])
        n_rows = A + F + (1 if pass2 else 0)
        mat = sp.csr_matrix(
            (
                np.concatenate(v).astype(np.float64),
                (np.concatenate(r).astype(np.int64), np.concatenate(c).astype(np.int64)),
            ),
            shape=(n_rows, U + G + S),
        )
        pi_lb = floor
        if not floors:
            pi_lb = np.zeros(G)
            pi_lb[net.e_group[active]] = -np.inf
        lb = np.concatenate([np.zeros(U), pi_lb, np.zeros(S)])
        ub = np.full(U + G + S, np.inf)
        model = mbh.ModelBuilderHelper()
        model.fill_model_from_sparse_data(lb, ub, obj, np.concatenate(lo), np.concatenate(hi), mat)  # type: ignore[arg-type]
        model.set_maximize(False)
        solver = mbh.ModelSolverHelper("glop")
        if time_limit:  # GLOP's deterministic work limit, never the wall clock
            solver.set_solver_specific_parameters(f"max_deterministic_time: {float(time_limit)!r}")
        solver.solve(model)
        if solver.status() != mbh.SolveStatus.OPTIMAL:
            return None
        x = np.asarray(solver.variable_values(), dtype=np.float64)
        return x, np.array([float(solver.objective_value())])

    if opt_units is None:
        first = solve(False, 0.0)
        if first is None:
            return Duals(np.zeros(G), np.zeros(S), False, time.perf_counter() - t0)
        opt = float(first[1][0])
        if not minimum:
            x1 = first[0]
            return Duals(x1[U : U + G], x1[U + G :], True, time.perf_counter() - t0, opt)
    else:
        opt = opt_units * scale
    second = solve(True, opt)
    if second is None:
        return Duals(np.zeros(G), np.zeros(S), False, time.perf_counter() - t0, opt)
    x2 = second[0]
    return Duals(x2[U : U + G], np.maximum(0.0, x2[U + G :]), True, time.perf_counter() - t0, opt)


def lp_duals(net: Network, pi: np.ndarray, mu: np.ndarray) -> Duals:
    """Equilibrium prices from the row duals the LP relaxation's solve returned, with no second LP.

    Any optimal dual of the relaxation is a competitive equilibrium of it (complementary slackness), so
    the prices support the LP's allocation; they are the basis' duals, not necessarily the minimum ones
    (the second, minimising LP took 38 of 130 wall s on `windows` 7,000 x 1,200). A group's price is
    floored at its cheapest ask, as in the other methods: raising an unconstrained price keeps every dual
    row satisfied and the dual objective unchanged."""
    t0 = time.perf_counter()
    return Duals(
        np.maximum(np.asarray(pi, dtype=np.float64), ask_floor(net)),
        np.maximum(mu, 0.0),
        True,
        time.perf_counter() - t0,
    )


def ask_floor(net: Network) -> np.ndarray:
    """Per group, the cheapest ask cost it can reach (fen per device for the lease; 0 with no pool edge)."""
    floor = np.full(len(net.g_class), np.inf)
    if len(net.f_pool):
        np.minimum.at(floor, net.f_group, net.f_cost.astype(np.float64) / 3600.0)
    floor[~np.isfinite(floor)] = 0.0
    return floor


def lp_min_duals(net: Network, rel: Relaxation) -> Duals | None:
    """Minimum equilibrium prices of the time-indexed LP (`relaxation.min_duals`: a warm re-solve with the
    right-hand side moved by a small step, not a second LP; 0.19 CPU s and 3,046 dual simplex iterations on
    `windows` 7,000 x 1,200, where the dual LP took 15), floored like `lp_duals`; None when not available."""
    t0 = time.perf_counter()
    md = min_duals(net, rel)
    if md is None:
        return None
    pi = np.maximum(md.pi, ask_floor(net))
    return Duals(pi, np.maximum(md.mu, 0.0), True, time.perf_counter() - t0)


def potentials(net: Network, graph: FlowGraph) -> Duals:
    """Minimum equilibrium prices from the solved min-cost flow, without another LP.

    On the residual graph of an optimal flow every feasible node potential d (d(sink) = 0) satisfies
    d(v) - d(w) <= cost(v, w) on every residual arc; the smallest such d is minus the shortest-path
    distance from the sink (no negative cycle exists at an optimum). Its values are the minimum duals:
    a group's price pi_j = d(group) (floored at the group's cheapest ask when nothing binds it), a
    capacity segment's rent mu_s = d(s) - d(next in its pool's chain). Distances are found by a
    label-correcting Bellman-Ford that only relaxes arcs leaving nodes improved in the last round, on
    exact integer costs."""
    t0 = time.perf_counter()
    G = len(net.g_class)
    S = len(net.s_pool)
    fwd = graph.flows < graph.caps
    bwd = graph.flows > 0
    tails = np.concatenate([graph.tails[fwd], graph.heads[bwd]])
    heads = np.concatenate([graph.heads[fwd], graph.tails[bwd]])
    costs = np.concatenate([graph.costs[fwd], -graph.costs[bwd]])
    dist = _distances_from(graph.nodes, graph.sink, tails, heads, costs)
    inf = np.iinfo(np.int64).max
    scale = graph.unit / 3600.0  # integer cost -> fen per device for the lease
    gd = dist[graph.g_node : graph.g_node + G]
    pi = np.maximum(np.where(gd < inf, -gd.astype(np.float64), -np.inf) * scale, ask_floor(net))
    sd = dist[graph.s_map] if graph.s_map is not None else dist[graph.s_node : graph.s_node + S]
    prev_same = np.zeros(S, dtype=bool)
    prev_same[1:] = net.s_pool[1:] == net.s_pool[:-1]
    nxt = np.where(prev_same, np.arange(S) - 1, -1)
    nd = np.where(nxt >= 0, sd[np.maximum(nxt, 0)], 0)
    ok = (sd < inf) & (nd < inf)
    mu = np.where(ok, (nd - np.where(ok, sd, 0)).astype(np.float64), 0.0) * scale
    return Duals(pi, np.maximum(mu, 0.0), True, time.perf_counter() - t0)


def _distances_from(n: int, src: int, tails: np.ndarray, heads: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Shortest-path distances from src (int64; max int where unreachable); arcs may cost less than zero
    but form no negative cycle."""
    inf = np.iinfo(np.int64).max
    order = np.argsort(tails, kind="stable")
    t, h, c = tails[order], heads[order], costs[order]
    start = np.searchsorted(t, np.arange(n + 1))
    dist = np.full(n, inf, dtype=np.int64)
    dist[src] = 0
    frontier = np.array([src], dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    for _ in range(n + 1):
        if not len(frontier):
            break
        lo, hi = start[frontier], start[frontier + 1]
        cnt = hi - lo
        if not cnt.sum():
            break
        idx = np.repeat(lo - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt) + np.arange(int(cnt.sum()))
        cand = np.repeat(dist[frontier], cnt) + c[idx]
        tgt = h[idx]
        better = cand < dist[tgt]
        if not better.any():
            break
        tgt, cand = tgt[better], cand[better]
        before = dist[tgt]
        np.minimum.at(dist, tgt, cand)
        # the improved nodes, sorted and once each (a mark array: np.unique hashes, 10x slower at 700k nodes)
        seen[tgt[dist[tgt] < before]] = True
        frontier = np.flatnonzero(seen)
        seen[frontier] = False
    else:
        raise RuntimeError("negative cycle in the residual graph of an optimal flow")
    return dist


def _dec(v: float) -> Decimal:
    return Decimal(repr(float(v))).quantize(Decimal("0.0001"))


@dataclass
class PricedPiece:
    """An allocation with the equilibrium figures behind its integer prices."""

    alloc: Allocation
    uplift: int
    fee_target: int


def _rent_in(net: Network, duals: Duals, lo: int, hi: int, k: int, lease: int) -> float:
    """Sum of the rents of segments lo..hi-1 that overlap slots [k, k + lease), as numpy sums them."""
    if hi <= lo:
        return 0.0
    sl = slice(lo, hi)
    ov = (net.s_lo[sl] < k + lease) & (net.s_hi[sl] > k)
    return float(duals.mu[sl][ov].sum())


def quantized(v: float) -> int:
    """v in units of 0.0001 fen, rounded half to even as `_dec` rounds it (exact: from the float's repr)."""
    return int(_dec(v).scaleb(4))


@dataclass(frozen=True)
class Amounts:
    """The integer figures of one piece under the pricing rule (module docstring)."""

    provider_price: int
    buyer_price: int
    buyer_pays: int
    provider_receives: int
    uplift: int
    fee_target: int


def piece_amounts(
    ask: int, limit: int, devices: int, lease_seconds: int, fee_bps: int, pi_q: int | None, rent_q: int
) -> Amounts:
    """The pricing rule in integer arithmetic; pi_q and rent_q are the group price and the piece's rent per
    device for the lease in 0.0001 fen (pi_q None: no equilibrium prices, pay-as-ask).

    Every fraction of the rule has denominator 3600 (device-hours: devices x lease_seconds / 3600) or
    D = 10000 x lease_seconds / 3600 (per device-hour from a lease figure in 0.0001 fen); numerators stay
    integers, so the result is exact, as with Fractions, at a fraction of the cost."""
    qn = devices * lease_seconds  # q = qn / 3600 device-hours
    uplift_num = 0  # uplift = uplift_num / (D * 3600), D = 10000 * lease_seconds
    big_d = 10000 * lease_seconds
    if pi_q is not None:
        # ce_b = pi_q * 3600 / D, ce_s = ask + rent_q * 3600 / D
        nb = pi_q * 3600
        ns = ask * big_d + rent_q * 3600
        ceil_b = -(-nb // big_d)
        ceil_s = -(-ns // big_d)
        ps = min(limit, max(ask, ceil_s))
        if ns < ask * big_d:
            uplift_num += (ask * big_d - ns) * qn
        if ceil_b > limit:
            uplift_num += (ceil_b - limit) * big_d * qn
        pb_target = max(ps, ceil_b)
    else:
        ps = ask
        pb_target = ask
    with_fee = -(-(ps * (10000 + fee_bps)) // 10000)
    pb = min(limit, max(pb_target, with_fee))
    recv = -(-(ps * qn) // 3600)
    pays = (pb * qn) // 3600
    if pays < recv:
        # both amounts within one fen of each other: settle at the amount that keeps both sides IR
        if recv * 3600 <= limit * qn:
            pays = recv
        else:
            recv = pays
    uplift = -(-uplift_num // (big_d * 3600))
    return Amounts(ps, pb, pays, recv, uplift, (recv * fee_bps) // 10000)


def price_pieces(
    pieces: list[Piece], net: Network | None, duals: Duals | None, fee_bps: int
) -> tuple[list[PricedPiece], str]:
    """Integer prices and exact amounts for every piece, by the documented rule."""
    prep = net.prep if net is not None else None
    use = duals is not None and duals.ok and net is not None
    out: list[PricedPiece] = []
    assert prep is not None or not pieces
    group_q: dict[int, int] = {}
    rent_qs: dict[float, int] = {}
    seg_lo = seg_hi = s_lo = s_hi = mu = e_group = None
    if use and pieces:
        assert net is not None and duals is not None
        pools = np.fromiter((pc.pool for pc in pieces), dtype=np.int64, count=len(pieces))
        seg_lo = np.searchsorted(net.s_pool, pools, side="left").tolist()
        seg_hi = np.searchsorted(net.s_pool, pools, side="right").tolist()
        s_lo, s_hi, mu, e_group = net.s_lo.tolist(), net.s_hi.tolist(), duals.mu.tolist(), net.e_group.tolist()
    asks = prep.pool_ask.tolist() if prep is not None else []
    slot = prep.slot_seconds if prep is not None else 0
    for i, pc in enumerate(pieces):
        assert prep is not None
        lease_seconds = pc.lease * slot
        pi_q: int | None = None
        rent_q = 0
        if use:
            assert net is not None and duals is not None
            assert seg_lo is not None and seg_hi is not None and s_lo is not None and s_hi is not None
            assert mu is not None and e_group is not None
            j = e_group[pc.edge]
            pi_q = group_q.get(j)
            if pi_q is None:
                pi_q = group_q[j] = quantized(duals.pi[j])
            lo, hi = seg_lo[i], seg_hi[i]
            if hi - lo == 1:  # one segment (the common case): the sum numpy would take is that rent or 0.0
                rent = mu[lo] if s_lo[lo] < pc.k + pc.lease and s_hi[lo] > pc.k else 0.0
            else:
                rent = _rent_in(net, duals, lo, hi, pc.k, pc.lease)
            rq = rent_qs.get(rent)
            if rq is None:
                rq = rent_qs[rent] = quantized(rent)
            rent_q = rq
        a = piece_amounts(asks[pc.pool], pc.limit, pc.devices, lease_seconds, fee_bps, pi_q, rent_q)
        start = prep.slot0 + pc.k * slot
        alloc = Allocation(
            order_id=prep.market.orders[pc.order].id,
            pool_id=prep.market.pools[pc.pool].id,
            devices=pc.devices,
            start=start,
            end=start + lease_seconds,
            buyer_price_fen=a.buyer_price,
            provider_price_fen=a.provider_price,
            buyer_pays=a.buyer_pays,
            provider_receives=a.provider_receives,
            fee=a.buyer_pays - a.provider_receives,
            node=pc.node if pc.node >= 0 else None,
        )
        out.append(PricedPiece(alloc, a.uplift, a.fee_target))
    return out, (PRICING_RULE if use else FALLBACK_RULE)


def _group_gang(net: Network, j: int) -> int:
    """The gang size a group's posted price is for: its piece size, or a site-co-located gang's need."""
    if net.g_site is not None and net.g_site[j] > NODE_GANG:
        return int(net.g_site[j]) // SITE_K_RADIX
    return int(net.g_gang[j])


def class_prices(net: Network, duals: Duals | None) -> list[ClassPrice]:
    """Posted prices per group (class, gang, lease, start): buyer price per device-hour and class rent."""
    if duals is None or not duals.ok:
        return []
    prep = net.prep
    out: list[ClassPrice] = []
    for j in range(len(net.g_class)):
        c = int(net.g_class[j])
        L = int(net.g_lease[j])
        hours = Decimal(L * prep.slot_seconds) / Decimal(3600)
        bp = (_dec(duals.pi[j]) / hours).quantize(Decimal("0.0001"), rounding=ROUND_FLOOR)
        mina = int(prep.class_min_ask[c])
        region, model = prep.classes[c]
        out.append(
            ClassPrice(
                region=region,
                model=model,
                gang=_group_gang(net, j),
                lease_slots=L,
                start=prep.slot0 + int(net.g_start[j]) * prep.slot_seconds,
                buyer_price=bp,
                min_ask_fen=mina,
                rent=max(Decimal(0), bp - mina),
            )
        )
    return out
