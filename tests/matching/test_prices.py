"""Prices from LP duals: signs, complementary slackness on used pairs, IR, budget balance, uplift."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings

from matching.clearing import clear
from matching.eligibility import prepare
from matching.generators import generate
from matching.model import Market
from matching.prices import compute_duals, potentials
from matching.relaxation import build_network, relax

from .markets import markets


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(future=False))
def test_dual_signs_and_slackness(m: Market) -> None:
    prep = prepare(m)
    net = build_network(prep)
    rel = relax(net)
    d = compute_duals(net, None)
    assert d.ok
    assert (d.mu >= -1e-9).all()  # rents are non-negative
    assert (d.pi >= -1e-9).all()  # prices are non-negative
    a = net.f_cost / 3600.0
    for f in range(len(net.f_pool)):
        rent = sum(d.mu[s] for s in net.f_segs[f])
        j = net.f_group[f]
        assert d.pi[j] <= a[f] + rent + 1e-6  # dual feasibility on the supply side
        if rel.y[f] > 1e-9:
            assert abs(d.pi[j] - a[f] - rent) <= 1e-5 * max(1.0, a[f])  # price = ask + rent where used
            assert d.pi[j] >= a[f] - 1e-5 * max(1.0, a[f])  # price >= ask on used pairs (LP tolerance)
    assert abs(d.opt * 3600 - rel.value) <= 1e-6 * max(1.0, abs(rel.value)) + 1e-3


def test_prices_on_a_generated_market() -> None:
    m = generate("prices", 300, 60, 5)
    r = clear(m)
    assert r.audit.ok
    assert r.audit.budget_balanced
    assert r.audit.fee_total == sum(a.fee for a in r.allocations)
    assert r.audit.fee_total > 0
    assert all(p.buyer_price >= 0 and p.rent >= 0 for p in r.prices)
    pools = {p.id: p for p in m.pools}
    for a in r.allocations:
        assert a.provider_price_fen >= pools[a.pool_id].ask_fen
        assert a.buyer_price_fen >= a.provider_price_fen
    # posted prices never under the cheapest ask of their class
    assert all(p.buyer_price >= Decimal(p.min_ask_fen) - 1 for p in r.prices)


def test_minimum_prices_not_above_first_pass() -> None:
    m = generate("contention", 200, 30, 2)
    net = build_network(prepare(m))
    rel = relax(net)
    lo = compute_duals(net, rel.value)
    assert lo.ok
    assert abs(float(lo.pi.sum())) >= 0
    hi = compute_duals(net, None, minimum=False)
    assert lo.pi.sum() <= hi.pi.sum() + 1e-6


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(future=False))
def test_flow_potentials_are_the_minimum_dual_prices(m: Market) -> None:
    """The potentials of the solved min-cost flow equal the dual LP's minimum equilibrium prices (pass 2),
    with no second LP: same group prices and the same rent on every pool edge."""
    prep = prepare(m)
    net = build_network(prep)
    rel = relax(net)
    if rel.method != "mcf" or rel.graph is None:
        return
    pot = potentials(net, rel.graph)
    lp = compute_duals(net, rel.value)
    assert pot.ok and lp.ok
    tol = 1e-4 * max(1.0, float(abs(lp.pi).max(initial=0.0)))
    active = np.zeros(len(net.g_class), dtype=bool)
    active[net.e_group[net.e_group >= 0]] = True
    assert np.abs(pot.pi - lp.pi)[active].max(initial=0.0) <= tol
    for f in range(len(net.f_pool)):
        r_pot = float(pot.mu[net.f_segs[f]].sum())
        r_lp = float(lp.mu[net.f_segs[f]].sum())
        if rel.y[f] > 0:
            assert abs(r_pot - r_lp) <= tol


def test_clearing_names_its_prices_method() -> None:
    r = clear(generate("scale-leases", 300, 50, 4))
    assert r.stats.prices_method == "potentials" and r.prices and r.audit.ok
    assert {c.name: c.violations for c in r.audit.checks}["prices"] == 0
    w = clear(generate("windows", 300, 50, 4))
    assert w.stats.prices_method == "lp-min-duals" and w.prices and w.audit.ok
    assert clear(generate("scale", 100, 20, 1), prices=False).stats.prices_method == "none"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(future=True))
def test_lp_row_duals_are_equilibrium_prices_of_the_relaxation(m: Market) -> None:
    # the time-indexed LP's own row duals (floored at the cheapest ask): supply rows hold everywhere and bind
    # where the LP uses a pool; a served edge's price is at most its value, an order the LP leaves out
    # values none of its groups above the price (no envy in the relaxation)
    from matching.prices import lp_duals

    solved = _solved_lp(m)
    if solved is None:
        return
    prep, net, rel = solved
    assert rel.pi is not None and rel.mu is not None
    d = lp_duals(net, rel.pi, rel.mu)
    w = net.e_weight / 3600.0
    tol = 1e-6 * max(1.0, float(np.abs(w).max(initial=0.0)))
    _assert_supply_rows(net, rel, d.pi, d.mu, tol)
    act = np.nonzero(net.e_group >= 0)[0]
    served = rel.x[act] > 1e-7  # prices and values are per device for the lease
    assert (d.pi[net.e_group[act]] <= w[act] + tol)[served].all()
    out = np.ones(prep.n_orders, dtype=bool)
    out[prep.e_order[act][served]] = False
    lost = out[prep.e_order[act]]
    assert (d.pi[net.e_group[act]] >= w[act] - tol)[lost].all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(future=True))
def test_lp_min_duals_are_the_minimum_optimal_duals(m: Market) -> None:
    # the warm re-solve with the right-hand side moved by a step gives optimal duals of the LP (dual feasible,
    # binding where the LP uses a pool) whose sum pi + sum mu equals the dual LP's minimum (pass 2, prices
    # free) and is never above the basis' own duals
    from matching.relaxation import min_duals

    solved = _solved_lp(m)
    if solved is None:
        return
    _, net, rel = solved
    assert rel.pi is not None and rel.mu is not None
    md = min_duals(net, rel)
    assert md is not None
    ref = compute_duals(net, rel.value, floors=False)
    assert ref.ok
    w = net.e_weight / 3600.0
    tol = 1e-6 * max(1.0, float(np.abs(w).max(initial=0.0))) * max(1, len(net.g_class) + len(net.s_pool))
    assert abs(float(md.pi.sum() + md.mu.sum()) - float(ref.pi.sum() + ref.mu.sum())) <= tol
    nonempty = np.zeros(len(net.g_class), dtype=bool)
    nonempty[net.e_group[net.e_group >= 0]] = True
    assert float(md.pi.sum() + md.mu.sum()) <= float(rel.pi[nonempty].sum() + rel.mu.sum()) + tol
    _assert_supply_rows(net, rel, md.pi, md.mu, 1e-6 * max(1.0, float(np.abs(w).max(initial=0.0))))


def _solved_lp(m: Market) -> tuple[Any, Any, Any] | None:
    """The market's time-indexed LP solved (prep, network, relaxation); None with no order edge."""
    from matching.relaxation import solve_lp

    prep = prepare(m)
    net = build_network(prep)
    if not (net.e_group >= 0).any():
        return None
    return prep, net, solve_lp(net)


def _assert_supply_rows(net: Any, rel: Any, pi: np.ndarray, mu: np.ndarray, tol: float) -> None:
    """Rents are non-negative, no group's price exceeds a pool's ask + rent, and it equals it where the LP uses
    the pool (dual feasibility and complementary slackness on the supply side)."""
    a = net.f_cost / 3600.0
    rent = np.array([mu[s].sum() for s in net.f_segs])
    assert (mu >= -tol).all()
    assert (pi[net.f_group] - rent <= a + tol).all()
    used = rel.y > 1e-7
    assert np.abs(pi[net.f_group] - rent - a)[used].max(initial=0.0) <= tol


def test_windows_clearing_posts_minimum_lp_prices() -> None:
    # a clearing on the time-indexed LP posts the minimum duals (not the basis' own), and they pass the audit
    w = clear(generate("windows", 400, 60, 3))
    assert w.stats.prices_method == "lp-min-duals" and w.prices and w.audit.ok
    assert {c.name: c.violations for c in w.audit.checks}["prices"] == 0


def test_a_step_that_crosses_a_breakpoint_falls_back_to_the_basis_duals(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # a step so large the LP's value is no longer linear in it fails the check at both tries: the clearing
    # posts the basis' own duals (an equilibrium all the same) and names them
    import matching.relaxation as relaxation

    m = generate("windows", 400, 60, 3)
    monkeypatch.setattr(relaxation, "MIN_DUAL_STEP", 1e4)
    r = clear(m)
    assert r.stats.prices_method == "lp-duals" and r.prices and r.audit.ok
