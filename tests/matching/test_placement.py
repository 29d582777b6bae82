"""The placer's running welfare equals the sum over its live pieces through commits, removals and copies."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching.model import Market

from .markets import markets, repaired_then_thinned


def _summed(placer) -> int:  # type: ignore[no-untyped-def]
    prep = placer.prep
    return sum(
        (pc.limit - int(prep.pool_ask[pc.pool])) * pc.devices * pc.lease * prep.slot_seconds for pc in placer.pieces
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(future=True), st.randoms(use_true_random=False))
def test_running_welfare_matches_the_pieces(m: Market, rnd) -> None:  # type: ignore[no-untyped-def]
    _, _, _, placer, before = repaired_then_thinned(m, rnd, 0.5)
    assert placer.welfare_units() == _summed(placer)
    assert before.welfare_units() == _summed(before)  # the copy taken before the removals is independent
