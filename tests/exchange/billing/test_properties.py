"""Hypothesis invariants: postings balance, amounts are ints, splitting a span stays within the bound."""

from __future__ import annotations

import itertools
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.billing import (
    VolumeBand,
    compute_tier_fen,
    milestone_amounts,
    per_minute_fen,
    postings_for,
    subscription_fen,
)

LADDER = (VolumeBand(0, 0), VolumeBand(7, 333), VolumeBand(50, 1250), VolumeBand(400, 2500))
prices = st.integers(min_value=0, max_value=10_000_000)
fees = st.integers(min_value=0, max_value=10_000)


def split(total: int, cuts: list[int]) -> list[int]:
    """Partition `total` into parts at the (sorted, clipped) cut points."""
    points = sorted({min(max(c, 0), total) for c in cuts} | {0, total})
    return [b - a for a, b in itertools.pairwise(points)] or [0]


def ceil_half(k: int) -> int:
    return (k + 1) // 2


def check_split(whole: int, parts: list[int], fee_bps: int) -> None:
    """The documented bound: debit within ceil(k/2) fen, fee and credit within k fen (specs/billing.md)."""
    k = len(parts)
    p_whole = postings_for(whole, fee_bps)
    p_parts = [postings_for(x, fee_bps) for x in parts]
    for p in [p_whole, *p_parts]:
        assert all(type(v) is int for v in p.as_dict().values())
        assert p.buyer_debit_fen == p.provider_credit_fen + p.fee_fen
    debit = sum(p.buyer_debit_fen for p in p_parts)
    assert abs(debit - p_whole.buyer_debit_fen) <= ceil_half(k)
    assert abs(sum(p.fee_fen for p in p_parts) - p_whole.fee_fen) <= k
    assert abs(sum(p.provider_credit_fen for p in p_parts) - p_whole.provider_credit_fen) <= k


@given(amount=st.integers(min_value=0, max_value=10**15), fee_bps=fees)
def test_postings_always_balance(amount: int, fee_bps: int) -> None:
    p = postings_for(amount, fee_bps)
    assert p.buyer_debit_fen == p.provider_credit_fen + p.fee_fen
    assert all(type(v) is int and v >= 0 for v in p.as_dict().values())
    assert abs(p.fee_fen * 10_000 - amount * fee_bps) <= 5_000


@settings(max_examples=200, deadline=None)
@given(
    price=prices,
    minutes=st.integers(min_value=0, max_value=10**7),
    cuts=st.lists(st.integers(min_value=0, max_value=10**7), max_size=12),
    fee_bps=fees,
)
def test_per_minute_split(price: int, minutes: int, cuts: list[int], fee_bps: int) -> None:
    parts = split(minutes, cuts)
    whole = per_minute_fen(price, minutes)
    assert type(whole) is int
    check_split(whole, [per_minute_fen(price, m) for m in parts], fee_bps)


@settings(max_examples=200, deadline=None)
@given(
    price=prices,
    scu=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("40"), places=3),
    prior=st.integers(min_value=0, max_value=10**6),
    minutes=st.integers(min_value=0, max_value=10**6),
    cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=12),
    fee_bps=fees,
)
def test_compute_tier_split(price: int, scu: Decimal, prior: int, minutes: int, cuts: list[int], fee_bps: int) -> None:
    parts = split(minutes, cuts)
    whole = compute_tier_fen(price, scu, minutes, prior, LADDER)
    amounts = []
    before = prior
    for m in parts:
        amounts.append(compute_tier_fen(price, scu, m, before, LADDER))
        before += m
    assert type(whole) is int and all(type(a) is int for a in amounts)
    check_split(whole, amounts, fee_bps)


@settings(max_examples=200, deadline=None)
@given(
    price=prices,
    devices=st.integers(min_value=0, max_value=1000),
    period=st.integers(min_value=1, max_value=366 * 86400),
    data=st.data(),
    fee_bps=fees,
)
def test_subscription_split(price: int, devices: int, period: int, data: st.DataObject, fee_bps: int) -> None:
    covered = data.draw(st.integers(min_value=0, max_value=period))
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=covered), max_size=12))
    parts = split(covered, cuts)
    whole = subscription_fen(price, devices, covered, period)
    check_split(whole, [subscription_fen(price, devices, c, period) for c in parts], fee_bps)


@given(
    price=st.integers(min_value=0, max_value=10**12),
    shares=st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=20),
)
def test_milestones_sum_exactly(price: int, shares: list[int]) -> None:
    # scale arbitrary weights to basis points summing to 10000 (the last absorbs the rest)
    total = sum(shares)
    bps = [max(1, s * 10_000 // total) for s in shares[:-1]]
    if sum(bps) >= 10_000:
        return
    bps.append(10_000 - sum(bps))
    amounts = milestone_amounts(price, bps)
    assert sum(amounts) == price
    assert all(type(a) is int and a >= 0 for a in amounts)
    for a, share in zip(amounts, bps, strict=True):
        assert abs(a * 10_000 - price * share) < 10_000  # within 1 fen of the exact share
