"""On tiny markets clear() equals an exhaustive enumeration written independently of the solver."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from fractions import Fraction

from hypothesis import HealthCheck, given, settings

from matching.clearing import clear
from matching.eligibility import limit_for
from matching.model import Market

from .markets import markets, pool_admits
from .test_clearing_properties import welfare


def brute_force(m: Market) -> Fraction:
    """Best welfare over every combination of (pool, start, devices) per order, or nothing (K = 1)."""
    slot = m.slot_seconds
    slot0 = m.now - m.now % slot
    options = []
    for o in m.orders:
        L = -(-o.duration_seconds // slot)
        if o.start_earliest is None or o.start_earliest <= m.now:
            starts = [slot0]
        else:
            k0 = -(-(o.start_earliest - slot0) // slot)
            starts = [slot0 + k * slot for k in range(k0, k0 + m.max_start_slots)]
        if o.start_latest is not None:
            starts = [s for s in starts if s <= o.start_latest]
        opts = [None]
        for p in m.pools:
            if not pool_admits(m, o, p, L):
                continue
            lim = limit_for(o, p.model, p.scu)
            assert lim is not None
            n = o.quantity_devices if o.quantity_devices is not None else math.ceil(o.quantity_scu / p.scu)
            need = n if o.all_or_nothing else (min(n, o.min_fill_devices) if o.quantity_scu is None else 1)
            for s in starts:
                if p.window_end is not None and s + L * slot > p.window_end:
                    continue
                for d in range(need, n + 1):
                    v = (lim - p.ask_fen) * d * L * slot
                    if o.colocation == "node" and d > 1:  # one node that holds the gang
                        sizes = [min(p.devices_per_node, p.devices - j * p.devices_per_node) for j in range(p.nodes)]
                        opts.extend((p, s, L, d, v, j) for j, size in enumerate(sizes) if size >= d)
                    else:
                        opts.append((p, s, L, d, v, None))
        options.append(opts)
    best = Fraction(0)
    for combo in itertools.product(*options):
        use = defaultdict(int)
        ok = True
        val = 0
        for c in combo:
            if c is None:
                continue
            p, s, L, d, v, j = c
            val += v
            for t in range(s, s + L * slot, slot):
                use[(p.id, t)] += d
                if j is not None:
                    use[(p.id, j, t)] += d
                    if use[(p.id, j, t)] > min(p.devices_per_node, p.devices - j * p.devices_per_node):
                        ok = False
                held = sum(r.devices for r in p.reserved if r.start < t + slot and r.end > t)
                if use[(p.id, t)] > p.devices - held:
                    ok = False
        if ok and val > best * 3600:
            best = Fraction(val, 3600)
    return best


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(max_orders=3, max_pools=3, multi=False))
def test_tiny_markets_match_brute_force(m: Market) -> None:
    got = welfare(m, clear(m).allocations)
    want = brute_force(m)
    assert abs(got - want) <= want * Fraction(1, 10**9), (got, want)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(max_orders=3, max_pools=3, multi=False))
def test_integer_model_optimum_is_the_brute_force_optimum(m: Market) -> None:
    """The whole integer model (matching.mip, solved to optimality) has the enumerated optimum, and its
    solution committed through the placer is feasible with that welfare."""
    from matching.eligibility import prepare
    from matching.mip import solve_mip, to_placer
    from matching.relaxation import build_network

    from .markets import check_feasible

    prep = prepare(m)
    net = build_network(prep)
    want = brute_force(m)
    res = solve_mip(prep, net)
    if res is None:
        assert want == 0
        return
    assert res.status == "optimal"
    placer = to_placer(prep, net, res)
    assert Fraction(placer.welfare_units(), 3600) == want
    assert abs(Fraction(res.value) / 3600 - want) <= max(want, 1) * Fraction(1, 10**9)
    r = clear(m, prices=False)
    assert check_feasible(m, r.allocations) == []
