"""The neighbourhood polish: a merged cluster over the size cap is solved seed by seed, not skipped."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching import polish as po
from matching.eligibility import prepare
from matching.generators import generate
from matching.mip import count_candidates
from matching.model import Market
from matching.relaxation import build_network, relax
from matching.repair import repair

from .markets import markets, repaired_then_thinned


def test_cluster_over_the_cap_is_split_into_its_seeds_neighbourhoods() -> None:
    # tightness 800 x 140 seed 1: one cluster merges several seeds; with the cap set to its largest seed's
    # own neighbourhood the merged one is over it, so without splitting that cluster is skipped
    prep = prepare(generate("tightness", 800, 140, 1))
    net = build_network(prep)
    rel = relax(net)
    start = repair(prep, net, rel)
    merged = [(cs, parts) for cs, parts in po.clusters(prep, rel, start, po.seeds(prep, rel, start)) if len(parts) > 1]
    assert merged
    cs, parts = merged[0]
    cap = max(count_candidates(prep, po._neighbourhood(prep, start, p)) for p in parts)
    assert count_candidates(prep, po._neighbourhood(prep, start, cs)) > cap
    skipped = po.polish(prep, net, rel, start.copy(), gap_tolerance=1e-4, max_columns=cap)
    split = po.polish(prep, net, rel, start.copy(), gap_tolerance=1e-4, max_columns=cap, split=True)
    assert split.welfare_units() > skipped.welfare_units() >= start.welfare_units()
    assert split.welfare_units() <= rel.value


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(future=True), st.randoms(use_true_random=False))
def test_neighbourhood_is_the_unfilled_and_the_placed_there(m: Market, rnd) -> None:  # type: ignore[no-untyped-def]
    # orders with an edge in the classes that are unfilled or have a piece in them, also after removals
    prep, _, _, cur, _ = repaired_then_thinned(m, rnd, 0.3)
    classes = {c for c in range(len(prep.classes)) if rnd.random() < 0.5}
    want = np.zeros(prep.n_orders, dtype=bool)
    for o in range(prep.n_orders):
        edges = [e for e in range(len(prep.e_order)) if prep.e_order[e] == o and int(prep.e_class[e]) in classes]
        pcs = cur.order_pieces(o)
        want[o] = bool(edges) and (not pcs or any(int(prep.pool_class[pc.pool]) in classes for pc in pcs))
    assert (po._neighbourhood(prep, cur, classes) == want).all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(future=True))
def test_class_shortfalls_add_up_to_the_gap(m: Market) -> None:
    # the per-class shortfall that ranks the neighbourhoods sums to the relaxation's value minus the allocation's
    prep = prepare(m)
    net = build_network(prep)
    rel = relax(net)
    cur = repair(prep, net, rel)
    short = po.class_shortfall(prep, net, rel, cur)
    assert abs(float(short.sum()) - (rel.value - cur.welfare_units())) <= 1e-6 * max(1.0, abs(rel.value))
