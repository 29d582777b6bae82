"""Capacity segments: an edge's capacity is the minimum over its own segments, in any order of edges."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching.eligibility import prepare
from matching.model import Market
from matching.relaxation import build_network, edge_caps

from .markets import markets


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(future=True), st.randoms(use_true_random=False))
def test_edge_caps_is_the_minimum_over_each_edges_segments(m: Market, rnd) -> None:  # type: ignore[no-untyped-def]
    net = build_network(prepare(m))
    F, S = len(net.f_pool), len(net.s_pool)
    if not F:
        return
    caps = np.array([rnd.randint(0, 50) for _ in range(S)], dtype=np.int64)
    fs = np.array([rnd.randrange(F) for _ in range(rnd.randint(1, 2 * F))], dtype=np.int64)  # any order, repeats
    want = np.array([caps[net.f_segs[f]].min() for f in fs.tolist()], dtype=np.int64)
    assert (edge_caps(net, caps, fs) == want).all()
    assert len(edge_caps(net, caps, fs[:0])) == 0
