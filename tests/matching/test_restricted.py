"""The restricted integer model: over its size cap with each single-device order's best-paying edges, it
runs on the relaxation's support and the allocation's edges alone."""

from __future__ import annotations

import pytest

from matching import restricted
from matching.eligibility import prepare
from matching.generators import generate
from matching.relaxation import build_network, relax
from matching.repair import repair


def test_restricted_model_falls_back_to_the_relaxation_support(monkeypatch: pytest.MonkeyPatch) -> None:
    # tightness 800 x 140 seed 1: the repair ends 1.4% below the bound; the model with two best-paying edges
    # per order is about twice the size of the one on the support, and the cap admits only the smaller
    prep = prepare(generate("tightness", 800, 140, 1))
    net = build_network(prep)
    rel = relax(net)
    start = repair(prep, net, rel)
    small = restricted.restricted_columns(prep, restricted.unit_edge_mask(prep, net, rel, start, top=0))
    large = restricted.restricted_columns(prep, restricted.unit_edge_mask(prep, net, rel, start))
    assert small < large
    monkeypatch.setattr(restricted, "MAX_COLUMNS", small)
    out = restricted.restricted_mip(prep, net, rel, start)
    assert out.welfare_units() > start.welfare_units()
    assert out.welfare_units() <= rel.value
    monkeypatch.setattr(restricted, "MAX_COLUMNS", small - 1)
    prep.limits_hit.clear()
    assert restricted.restricted_mip(prep, net, rel, start) is start
    assert prep.limits_hit == ["restricted"]
