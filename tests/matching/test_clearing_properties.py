"""Properties of clear() on small random markets: feasibility, bound, audit, determinism, baselines."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import HealthCheck, given, settings

from matching.baselines import lp_bound
from matching.clearing import clear
from matching.model import Market

from .markets import check_feasible, markets

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def welfare(m: Market, allocations) -> Fraction:
    from matching.eligibility import limit_for

    pools = {p.id: p for p in m.pools}
    orders = {o.id: o for o in m.orders}
    tot = Fraction(0)
    for a in allocations:
        p = pools[a.pool_id]
        tot += Fraction(
            (limit_for(orders[a.order_id], p.model, p.scu) - p.ask_fen) * a.devices * (a.end - a.start), 3600
        )
    return tot


@SETTINGS
@given(markets())
def test_every_method_is_feasible_and_audited(m: Market) -> None:
    bound = lp_bound(m)
    for method in ("mcf", "greedy", "fifo"):
        r = clear(m, method=method)
        assert check_feasible(m, r.allocations) == [], method
        assert r.audit.ok, (method, r.audit)
        for a in r.allocations:
            assert a.buyer_pays == a.provider_receives + a.fee
            assert a.fee >= 0
        w = welfare(m, r.allocations)
        assert w <= Fraction(str(bound)) * (1 + Fraction(1, 10**9)) + 1, (method, w, bound)
        assert r.stats.welfare_fen == int(w)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_deterministic_for_a_seed(m: Market) -> None:
    a = clear(m)
    b = clear(m)
    assert a.allocations == b.allocations
    assert a.prices == b.prices


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(multi=False))
def test_optimizer_not_worse_than_baselines(m: Market) -> None:
    w = welfare(m, clear(m).allocations)
    assert w >= welfare(m, clear(m, method="greedy").allocations)
    assert w >= welfare(m, clear(m, method="fifo").allocations)
