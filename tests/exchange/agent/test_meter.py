"""Metering invariants (pure): periods are contiguous from the contract start to its end, sequence numbers
run 1..n, no period claims more than the contract's devices x its length, and the minutes reported add up
to the device-seconds observed (less under a minute per period at most when a short period caps them)."""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.agent import meter

C = meter.ContractSpan("c1", "NV-H100-SXM", 8, 1_000, 1_000 + 3_600)


def run(
    samples: list[tuple[int, int]], period: int, contract: meter.ContractSpan = C
) -> tuple[list[meter.Period], int]:
    """Feed (time, serving devices) samples, n=-1 meaning the agent restarts there (the journal keeps the
    meter but not the last sample); returns the periods and the device-seconds observed."""
    state = meter.start(contract, samples[0][0])
    periods: list[meter.Period] = []
    observed = 0
    last: tuple[int, int] | None = None
    for t, n in samples:
        if n < 0:
            state = replace(state, last_sample_at=None)
            last = None
            continue
        if last is not None:
            lo, hi = max(last[0], contract.start_at), min(t, contract.end_at)
            observed += min(n, contract.devices) * max(0, hi - lo)
        state = meter.observe(state, contract, n, 80, t)
        state, p = meter.close_due(state, contract, period, t)
        if p is not None:
            periods.append(p)
        last = (t, n)
    return periods, observed


def test_full_use_reports_every_device_minute() -> None:
    samples = [(t, 8) for t in range(1_000, 4_700, 5)]
    periods, observed = run(samples, 300)
    assert [p.seq for p in periods] == list(range(1, 13))  # 12 x 300 s, the last one ending at the contract end
    assert periods[0].period_start == C.start_at and periods[-1].period_end == C.end_at
    assert sum(p.device_minutes for p in periods) == 8 * 60 == observed // 60
    assert all(p.availability_bps == 10_000 and p.utilization_pct == 80 for p in periods)


def test_failed_devices_and_downtime_are_not_billed() -> None:
    samples = [(t, 8 if t < 2_000 else 6) for t in range(1_000, 3_000, 10)]
    samples += [(3_300, -1)] + [(t, 8) for t in range(3_600, 4_700, 10)]  # down 2990..3600: not counted
    periods, observed = run(samples, 300)
    total = sum(p.device_minutes for p in periods)
    assert total == observed // 60 == (8 * 1_000 + 6 * 990 + 8 * 1_000) // 60
    assert any(p.availability_bps < 10_000 for p in periods)
    assert all(a.period_end == b.period_start for a, b in itertools.pairwise(periods))


def test_assignment_splits_healthy_devices_between_running_contracts() -> None:
    a = meter.ContractSpan("a", "HW-910B3", 4, 0, 100)
    b = meter.ContractSpan("b", "HW-910B3", 4, 10, 100)
    later = meter.ContractSpan("c", "HW-910B3", 4, 500, 600)
    assert meter.assign([b, a, later], {"HW-910B3": 6}, 50) == {"a": 4, "b": 2}
    assert meter.assign([a], {"NV-H20": 8}, 50) == {"a": 0}
    assert meter.assign([a, b], {"HW-910B3": 8}, 130, since=95) == {"a": 4, "b": 4}  # ended inside (95, 130]
    assert meter.assign([a, b], {"HW-910B3": 8}, 130, since=100) == {}


@settings(max_examples=150, deadline=None)
@given(
    devices=st.integers(1, 16),
    length=st.integers(30, 2_000),
    period=st.integers(10, 600),
    steps=st.lists(st.tuples(st.integers(1, 90), st.integers(-1, 20)), min_size=1, max_size=80),
)
def test_periods_are_contiguous_capped_and_add_up(
    devices: int, length: int, period: int, steps: list[tuple[int, int]]
) -> None:
    contract = meter.ContractSpan("c", "NV-H20", devices, 10_000, 10_000 + length)
    t = contract.start_at - 5
    samples = []
    for dt, n in steps:
        samples.append((t, n))
        t += dt
    samples.append((contract.end_at + 1, 0))
    periods, observed = run(samples, period, contract)
    assert periods, "the contract end always closes a period"
    assert [p.seq for p in periods] == list(range(1, len(periods) + 1))
    assert periods[0].period_start == contract.start_at and periods[-1].period_end == contract.end_at
    for a, b in itertools.pairwise(periods):
        assert a.period_end == b.period_start
    for p in periods:
        assert p.period_end > p.period_start
        assert p.device_minutes * 60 <= devices * (p.period_end - p.period_start)  # the exchange's rule
        assert 0 <= p.availability_bps <= 10_000
        assert p.utilization_pct is None or p.utilization_pct == 80  # every sample reports 80 %
    total = sum(p.device_minutes for p in periods)
    assert total <= observed // 60
    # what a short period could not claim is carried; only the last one can leave some unbilled
    assert observed // 60 - total <= max(1, 60 // max(1, devices * min(period, length)) + 1) * len(periods)
