"""The placer's running welfare equals the sum over its live pieces through commits, removals and copies."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching.eligibility import prepare
from matching.model import Market
from matching.relaxation import build_network, relax
from matching.repair import repair

from .markets import markets


def _summed(placer) -> int:  # type: ignore[no-untyped-def]
    prep = placer.prep
    return sum(
        (pc.limit - int(prep.pool_ask[pc.pool])) * pc.devices * pc.lease * prep.slot_seconds for pc in placer.pieces
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(future=True), st.randoms(use_true_random=False))
def test_running_welfare_matches_the_pieces(m: Market, rnd) -> None:  # type: ignore[no-untyped-def]
    prep = prepare(m)
    net = build_network(prep)
    placer = repair(prep, net, relax(net))
    assert placer.welfare_units() == _summed(placer)
    other = placer.copy()
    for o in range(prep.n_orders):
        if placer.filled[o] and rnd.random() < 0.5:
            placer.remove(o)
    assert placer.welfare_units() == _summed(placer)
    assert other.welfare_units() == _summed(other)  # the copy is independent
