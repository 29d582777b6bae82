"""Metering, pure: which devices serve which contract, device-seconds observed, and the periods to report.

A contract's meter accrues (devices serving it) x (seconds observed) inside the contract span; a period
closes every `period_seconds` (and at the contract end) with whole device-minutes, the leftover seconds
carried into the next period, so the sum reported is floor(observed device-seconds / 60) (a period never
claims more than the contract's devices x its length, the exchange's rule; what is left under a minute at
the contract end is not billed).
Periods are contiguous (period_start = previous period_end), so the exchange's per-meter sequence check
sees neither gaps nor overlaps; time the agent did not observe (it was down) is simply not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ContractSpan:
    """What the meter needs of a contract the exchange assigned to this node."""

    id: str
    model: str
    devices: int
    start_at: int
    end_at: int


@dataclass(frozen=True)
class MeterState:
    """One contract's meter between periods (persisted in the journal)."""

    contract_id: str
    next_seq: int
    period_start: int
    last_sample_at: int | None
    device_seconds: int = 0
    full_seconds: int = 0  # contract devices x observed seconds: the availability denominator
    util_weighted: int = 0  # sum of utilisation % x device-seconds
    done: bool = False


@dataclass(frozen=True)
class Period:
    """A closed period, ready to sign: whole device-minutes and availability in basis points."""

    contract_id: str
    seq: int
    period_start: int
    period_end: int
    device_minutes: int
    availability_bps: int
    utilization_pct: int | None


def assign(
    contracts: Sequence[ContractSpan], healthy: Mapping[str, int], now: int, since: int | None = None
) -> dict[str, int]:
    """Devices serving each contract running in the sampled interval (since, now]: per model, in contract
    order, up to what it bought (a contract that ended inside the interval still gets its devices for it)."""
    left = dict(healthy)
    out: dict[str, int] = {}
    after = now if since is None else since
    for c in sorted(contracts, key=lambda c: (c.start_at, c.id)):
        if not (c.start_at <= now and c.end_at > after):
            continue
        n = min(c.devices, left.get(c.model, 0))
        left[c.model] = left.get(c.model, 0) - n
        out[c.id] = n
    return out


def start(contract: ContractSpan, now: int) -> MeterState:
    """A fresh meter: its first period starts at the contract start (the agent saw nothing before now)."""
    return MeterState(contract.id, 1, contract.start_at, None)


def observe(state: MeterState, contract: ContractSpan, serving: int, util_pct: int | None, now: int) -> MeterState:
    """Accrue from the last sample to `now` (clipped to the contract span) with `serving` devices."""
    if state.done:
        return state
    if state.last_sample_at is None:
        return replace(state, last_sample_at=min(max(now, contract.start_at), contract.end_at))
    lo = max(state.last_sample_at, contract.start_at, state.period_start)
    hi = min(now, contract.end_at)
    if hi <= lo:
        return replace(state, last_sample_at=max(state.last_sample_at, min(now, contract.end_at)))
    dt = hi - lo
    n = min(serving, contract.devices)
    return replace(
        state,
        last_sample_at=hi,
        device_seconds=state.device_seconds + n * dt,
        full_seconds=state.full_seconds + contract.devices * dt,
        util_weighted=state.util_weighted + (util_pct if util_pct is not None else 100) * n * dt,
    )


def close_due(
    state: MeterState, contract: ContractSpan, period_seconds: int, now: int
) -> tuple[MeterState, Period | None]:
    """Close the current period if it is `period_seconds` old or the contract has ended and was observed
    to its end; the leftover device-seconds (under a minute) carry into the next period."""
    if state.done:
        return state, None
    ended = state.last_sample_at is not None and state.last_sample_at >= contract.end_at
    if ended:
        end = contract.end_at
    elif now - state.period_start >= period_seconds and state.last_sample_at is not None:
        end = min(state.last_sample_at, contract.end_at)
        if end <= state.period_start:
            return state, None
    else:
        return state, None
    if end <= state.period_start:
        return replace(state, done=True), None
    # whole minutes, never more than the contract's devices x the period (the exchange's rule); the rest carries
    minutes = min(state.device_seconds // 60, contract.devices * (end - state.period_start) // 60)
    carry = state.device_seconds - 60 * minutes
    # availability over the whole period: time the agent did not observe (it was down) counts as unavailable
    avail = min(10_000, state.device_seconds * 10_000 // (contract.devices * (end - state.period_start)))
    util = None if state.device_seconds == 0 else state.util_weighted // state.device_seconds
    period = Period(contract.id, state.next_seq, state.period_start, end, minutes, avail, util)
    nxt = MeterState(
        contract.id,
        state.next_seq + 1,
        end,
        state.last_sample_at,
        device_seconds=carry,
        util_weighted=carry * (util if util is not None else 100),  # the carried seconds keep their utilisation
        done=ended,
    )
    return nxt, period
