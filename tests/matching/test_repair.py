"""The array pipeline: edges against an independent enumeration, network segments, exact unit re-solve,
the exact polish (integer model on neighbourhoods), the gap on a mid-size instance, and the shape of the
'scale' families."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from decimal import Decimal

import numpy as np
from hypothesis import HealthCheck, given, settings

from matching.clearing import clear
from matching.eligibility import (
    devices_for,
    limit_for,
    model_acceptable,
    prepare,
    region_allowed,
    start_candidates,
)
from matching.generators import generate
from matching.model import Market
from matching.polish import polish
from matching.relaxation import build_network, relax
from matching.repair import repair, unit_orders

from .markets import check_feasible, markets


def naive_edges(m: Market) -> set[tuple[int, str, str, int, int, int]]:
    """(order, region, model, start, devices, limit) for every order, class and start the rules allow."""
    prep = prepare(m)
    out = set()
    classes = {(p.region, p.model) for p in m.pools}
    for oi, o in enumerate(m.orders):
        L = int(prep.order_lease[oi])
        for region, model in sorted(classes):
            members = [i for i, p in enumerate(m.pools) if (p.region, p.model) == (region, model)]
            p0 = m.pools[members[0]]
            lim = limit_for(o, model, p0.scu)
            n = devices_for(o, p0.scu)
            if lim is None or n is None or not model_acceptable(o, p0):
                continue
            if not region_allowed(o, region, m.latency_ms):
                continue
            if lim < min(m.pools[i].ask_fen for i in members):
                continue
            if not any(o.billing_mode in m.pools[i].billing_modes for i in members):
                continue
            if min(prep.pool_min_lease_slots[i] for i in members) > L:
                continue
            need = n if o.all_or_nothing else min(n, o.min_fill_devices if o.quantity_scu is None else 1)
            peak = [int(prep.free[i].max()) for i in members]
            if max(peak) < (need if o.max_pools == 1 else 1):  # one pool holds it all, or pieces of any size
                continue
            if o.colocation == "node" and need > max(
                min(pk, m.pools[i].devices_per_node, m.pools[i].devices) for i, pk in zip(members, peak, strict=True)
            ):
                continue  # a single-node gang needs a node (within the pool's free peak) that holds it
            if o.colocation == "site" and o.same_model:
                per_site = Counter()
                for i, pk in zip(members, peak, strict=True):
                    per_site[m.pools[i].site] += pk
                if max(per_site.values()) < need:
                    continue
            for k in start_candidates(o, m, prep.slot0):
                if k + L > prep.horizon:
                    continue
                if all(prep.free[members, t].max() > 0 for t in range(k, k + L)):
                    out.add((oi, region, model, k, n, lim))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_edges_match_an_independent_enumeration(m: Market) -> None:
    prep = prepare(m)
    got = {
        (int(o), *prep.classes[int(c)], int(k), int(n), int(lim))
        for o, c, k, n, lim in zip(prep.e_order, prep.e_class, prep.e_start, prep.e_n, prep.e_limit, strict=True)
    }
    assert got == naive_edges(m)
    assert all(np.all(np.diff(es) == 1) for es in prep.order_edges if len(es) > 1)
    for oi in range(len(m.orders)):
        assert (oi in prep.reasons) == (len(prep.order_edges[oi]) == 0)


def test_network_segments_partition_each_lease() -> None:
    prep = prepare(generate("windows", 300, 40, 4))
    net = build_network(prep)
    assert len(net.f_pool) > 0
    for f in range(len(net.f_pool)):
        segs = net.f_segs[f]
        p = int(net.f_pool[f])
        j = int(net.f_group[f])
        lo, hi = int(net.g_start[j]), int(net.g_start[j] + net.g_lease[j])
        assert (net.s_pool[segs] == p).all()
        assert int(net.s_lo[segs[0]]) == lo and int(net.s_hi[segs[-1]]) == hi
        assert (net.s_lo[segs[1:]] == net.s_hi[segs[:-1]]).all()
    for s in range(len(net.s_pool)):
        p, a, z = int(net.s_pool[s]), int(net.s_lo[s]), int(net.s_hi[s])
        assert int(net.s_cap[s]) == int(prep.free[p, a:z].min())


def test_single_device_market_is_solved_exactly() -> None:
    m = generate("scale-leases", 600, 90, 3)
    m = replace(m, orders=tuple(o for o in m.orders if o.quantity_devices == 1))
    r = clear(m, prices=False)
    assert r.stats.gap == 0
    assert check_feasible(m, r.allocations) == []


def test_exact_polish_never_loses_and_stays_feasible() -> None:
    m = generate("scale-leases", 1500, 260, 13)  # an instance where the heuristic alone leaves a gap
    prep = prepare(m)
    net = build_network(prep)
    rel = relax(net)
    plain = repair(prep, net, rel)
    polished = polish(prep, net, rel, plain)
    assert plain.welfare_units() < rel.value
    assert polished.welfare_units() > plain.welfare_units()
    assert polished.welfare_units() <= rel.value
    assert (polished.free >= 0).all()
    units = unit_orders(prep)
    for o in np.nonzero(~units & polished.filled)[0].tolist():
        pcs = polished.order_pieces(o)
        assert len(pcs) == 1 and pcs[0].devices == int(prep.e_n[pcs[0].edge])
    again = polish(prep, net, rel, repair(prep, net, rel))  # deterministic: one thread, a node limit
    key = lambda pc: (pc.order, pc.pool, pc.k)  # noqa: E731
    assert sorted(again.pieces, key=key) == sorted(polished.pieces, key=key)
    r = clear(m, prices=False)
    assert check_feasible(m, r.allocations) == [] and r.audit.ok


def test_mid_size_scale_gap_is_small() -> None:
    m = generate("scale", 2000, 340, 5)
    r = clear(m, prices=False)
    assert r.audit.ok
    assert check_feasible(m, r.allocations) == []
    assert r.stats.gap <= Decimal("0.0005"), r.stats.gap
    greedy = clear(m, method="greedy", prices=False)
    assert r.stats.welfare_fen > greedy.stats.welfare_fen


def test_scale_family_follows_the_reference() -> None:
    m = generate("scale", 3000, 500, 2)
    sizes = Counter(o.quantity_devices for o in m.orders)
    assert set(sizes) <= {1, 2, 4, 8}
    assert 0.98 <= sizes[1] / len(m.orders) < 1.0
    assert {o.duration_seconds for o in m.orders} == {3600}
    assert all(o.start_earliest is None for o in m.orders)
    leases = generate("scale-leases", 3000, 500, 2)
    assert len({o.duration_seconds for o in leases.orders}) > 1
    assert Counter(o.quantity_devices for o in leases.orders)[1] / 3000 < 0.98
