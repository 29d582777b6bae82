"""Gangs on up to K pools of one site: the flow's bound reaches them only where a site can hold them, and
stays an upper bound of the integer optimum (checked against an independent enumeration)."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction

from hypothesis import HealthCheck, assume, given, settings

from matching.baselines import lp_bound
from matching.clearing import clear
from matching.eligibility import limit_for
from matching.model import Market, Order, Pool

from .markets import NOW, markets, plain_pool, pool_admits
from .test_clearing_properties import welfare


def _pool(i: int, site: str, ask: int) -> Pool:
    return plain_pool(f"P{i}", site=site, ask=ask)


def test_flow_serves_a_site_gang_only_where_one_site_holds_it() -> None:
    # a 16-device gang on up to 2 pools of one site: sites S1 and S2 have 8 cheap devices each, S3 has
    # 2 x 8 dearer ones. Only S3 holds the gang, so the optimum and the bound are (300 - 200) x 16 fen;
    # a flow that ignored sites took the 16 cheap devices of S1 + S2 and reported (300 - 100) x 16.
    market = Market(
        now=NOW,
        pools=(_pool(1, "S1", 100), _pool(2, "S2", 100), _pool(3, "S3", 200), _pool(4, "S3", 200)),
        orders=(
            Order(
                id="G",
                buyer="B",
                seq=0,
                quantity_devices=16,
                models=("M-A",),
                limits={"M-A": 300},
                max_pools=2,
                colocation="site",
                same_model=True,
            ),
        ),
        latency_ms={"CN-SH": {"CN-SH": 1}},
    )
    assert lp_bound(market) == 1600
    result = clear(market)
    assert result.stats.welfare_fen == 1600
    assert result.stats.bound_fen == 1600
    assert sorted((a.pool_id, a.devices) for a in result.allocations) == [("P3", 8), ("P4", 8)]
    assert result.audit.ok
    assert json.dumps([p.gang for p in result.prices]) == "[16]"


def _options(m: Market, o: Order) -> list[tuple[tuple[str, int], ...]]:
    """Every placement of one order starting now: tuples of (pool id, devices), co-location rules applied."""
    slot = m.slot_seconds
    L = -(-o.duration_seconds // slot)
    ok = []
    for p in m.pools:
        if not pool_admits(m, o, p, L):
            continue
        if p.window_end is not None and m.now - m.now % slot + L * slot > p.window_end:
            continue
        ok.append(p)
    n = o.quantity_devices or 0
    need = n if o.all_or_nothing else min(n, o.min_fill_devices)
    out: list[tuple[tuple[str, int], ...]] = [()]
    for k in range(1, o.max_pools + 1):
        for ps in itertools.combinations(ok, k):
            if o.colocation == "site" and len({(p.region, p.site) for p in ps}) > 1:
                continue
            if o.colocation in ("site", "region") and len({p.region for p in ps}) > 1:
                continue
            if o.same_model and len({p.model for p in ps}) > 1:
                continue
            for ds in itertools.product(range(1, n + 1), repeat=k):
                if need <= sum(ds) <= n:
                    out.append(tuple((p.id, d) for p, d in zip(ps, ds, strict=True)))
    return out


def _held(p: Pool, t: int) -> int:
    return sum(r.devices for r in p.reserved if r.start < t + 3600 and r.end > t)


def brute_force_multi(m: Market) -> Fraction:
    """The best welfare over every combination of placements (orders on several pools, all starting now)."""
    pools = {p.id: p for p in m.pools}
    slot = m.slot_seconds
    slot0 = m.now - m.now % slot
    best = Fraction(0)
    opts = [_options(m, o) for o in m.orders]
    for combo in itertools.product(*opts):
        use: dict[tuple[str, int], int] = {}
        val = Fraction(0)
        feasible = True
        for o, placement in zip(m.orders, combo, strict=True):
            L = -(-o.duration_seconds // slot)
            for pid, d in placement:
                p = pools[pid]
                val += Fraction((limit_for(o, p.model, p.scu) - p.ask_fen) * d * L * slot, 3600)
                for t in range(slot0, slot0 + L * slot, slot):
                    use[(pid, t)] = use.get((pid, t), 0) + d
                    feasible &= use[(pid, t)] <= p.devices - _held(p, t)
        if feasible and val > best:
            best = val
    return best


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(markets(max_orders=3, max_pools=3, multi=True, future=False))
def test_bound_and_clearing_against_enumeration_with_multi_pool_orders(m: Market) -> None:
    assume(all(o.quantity_scu is None and o.colocation != "node" for o in m.orders))
    assume(all((o.quantity_devices or 0) <= 4 for o in m.orders))
    want = brute_force_multi(m)
    assert Fraction(str(lp_bound(m))) >= want - Fraction(1, 1000)
    got = welfare(m, clear(m).allocations)
    assert got <= want
    assert got >= want * (1 - Fraction(1, 10**4))
