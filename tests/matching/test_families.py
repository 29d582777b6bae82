"""Instance families and the benchmark: determinism, greedy trap, report rows."""

from __future__ import annotations

from decimal import Decimal

import pytest

from matching.bench import format_report, run_match_bench
from matching.clearing import clear
from matching.generators import FAMILIES, MODELS, generate, latency_matrix, scu_of


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_deterministic_and_clears(family: str) -> None:
    a = generate(family, 120, 24, 7)
    assert a == generate(family, 120, 24, 7)
    assert a != generate(family, 120, 24, 8)
    r = clear(a, prices=False)
    assert r.audit.ok
    assert r.stats.welfare_fen <= r.stats.lp_bound_fen


def test_greedy_trap_greedy_falls_behind() -> None:
    m = generate("greedy-trap", 400, 40, 1)
    opt = clear(m, prices=False).stats
    greedy = clear(m, method="greedy", prices=False).stats
    assert opt.welfare_fen > Decimal("1.2") * greedy.welfare_fen
    assert opt.gap < Decimal("0.01")


def test_catalogue_and_latency() -> None:
    assert len(MODELS) >= 15
    h100 = next(m for m in MODELS if m.code == "NV-H100-SXM")
    assert scu_of(h100) == Decimal("3.17")
    lat = latency_matrix()
    assert len(lat) == 14
    assert lat["CN-BJ"]["CN-TJ"] < lat["CN-BJ"]["CN-GD"]
    assert all(lat[a][b] == lat[b][a] for a in lat for b in lat)


def test_bench_reports_from_one_run() -> None:
    seen = []
    r = run_match_bench("scale", 200, 30, 1, progress=lambda s, f: seen.append(s))
    assert seen[0] == "generate" and seen[-1] == "done"
    assert r["lp_bound_fen"] >= r["welfare_fen"] >= r["greedy_welfare_fen"] * 0
    assert Decimal(r["gap"]) >= 0
    rows = format_report(r)
    assert any(label == "LP bound" for label, _ in rows)


def test_contention_is_its_own_family_with_hot_classes() -> None:
    from matching.generators import hot_classes

    c = generate("contention", 2000, 400, 1)
    s = generate("scale-leases", 2000, 400, 1)
    assert c.to_json() != s.to_json()
    hot = hot_classes(c.pools)
    supply = sum(p.devices for p in c.pools if (p.region, p.model) in hot)
    demand = sum(
        o.quantity_devices or 0
        for o in c.orders
        if len(o.models) == 1 and len(o.regions) == 1 and (o.regions[0], o.models[0]) in hot
    )
    assert demand >= 3 * supply  # demand well above supply in the hot classes
    r = clear(c, prices=False)
    assert r.audit.ok


def test_bench_exact_reports_the_loss_against_the_integer_optimum() -> None:
    r = run_match_bench("leases", 300, 50, 2, prices=True, exact=120.0)
    assert r["exact_status"] == "optimal"
    assert r["welfare_fen"] <= r["exact_welfare_fen"] <= r["exact_bound_fen"] <= r["lp_bound_fen"] + 1
    assert Decimal(r["loss_to_exact"]) >= 0 and Decimal(r["exact_bound_gap"]) <= Decimal("1e-6")
    assert r["prices_method"] == "potentials" and r["prices_present"] and r["mcf_audit_ok"]
    assert any(label == "exact integer model" for label, _ in format_report(r))


def test_leases_and_nodes_families_have_their_shape() -> None:
    leases = generate("leases", 3000, 500, 1)
    hours = [o.duration_seconds // 3600 for o in leases.orders]
    assert min(hours) == 1 and max(hours) > 24 and max(hours) <= 72
    assert sorted(hours)[len(hours) // 2] <= 4  # heavy tail: median a few hours, the tail to days
    nodes = generate("nodes", 3000, 500, 1)
    assert any(p.nodes > 1 for p in nodes.pools)
    single_node = [o for o in nodes.orders if o.colocation == "node"]
    assert single_node and all((o.quantity_devices or 0) in (2, 4, 8) for o in single_node)
    r = clear(generate("nodes", 600, 160, 1), prices=False)
    assert r.audit.ok and {c.name: c.violations for c in r.audit.checks}["node_fit"] == 0
