"""The neighbourhood polish: a merged cluster over the size cap is solved seed by seed, not skipped."""

from __future__ import annotations

from matching import polish as po
from matching.eligibility import prepare
from matching.generators import generate
from matching.mip import count_candidates
from matching.relaxation import build_network, relax
from matching.repair import repair


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
