"""The pricing rule's integer arithmetic (`piece_amounts`) against a direct transcription of the rule in the
`matching.prices` docstring with exact fractions, on hypothesis-drawn figures."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from matching.prices import Amounts, piece_amounts, quantized


def _ceil(x: Fraction) -> int:
    return -(-x.numerator // x.denominator)


def _floor(x: Fraction) -> int:
    return x.numerator // x.denominator


def rule_with_fractions(
    ask: int, limit: int, devices: int, lease_seconds: int, fee_bps: int, pi_q: int | None, rent_q: int
) -> Amounts:
    """The documented rule, term by term, in Fractions."""
    per_h = Fraction(lease_seconds, 3600)
    q = Fraction(devices * lease_seconds, 3600)
    uplift = Fraction(0)
    if pi_q is not None:
        ce_b = Fraction(pi_q, 10000) / per_h
        ce_s = ask + Fraction(rent_q, 10000) / per_h
        ps = min(limit, max(ask, _ceil(ce_s)))
        if ce_s < ask:
            uplift += (ask - ce_s) * q
        if _ceil(ce_b) > limit:
            uplift += (_ceil(ce_b) - limit) * q
        pb_target = max(ps, _ceil(ce_b))
    else:
        ps = pb_target = ask
    pb = min(limit, max(pb_target, _ceil(Fraction(ps * (10000 + fee_bps), 10000))))
    recv, pays = _ceil(ps * q), _floor(pb * q)
    if pays < recv:
        if recv <= limit * q:
            pays = recv
        else:
            recv = pays
    return Amounts(ps, pb, pays, recv, _ceil(uplift), _floor(Fraction(recv * fee_bps, 10000)))


@settings(max_examples=600, deadline=None)
@given(
    ask=st.integers(0, 50_000),
    over=st.integers(-2_000, 50_000),
    devices=st.integers(1, 64),
    slots=st.integers(1, 300),
    slot_seconds=st.sampled_from([60, 300, 900, 3600]),
    fee_bps=st.integers(0, 2_000),
    pi_q=st.one_of(st.none(), st.integers(-(10**6), 10**12)),
    rent_q=st.integers(-(10**5), 10**10),
)
def test_integer_rule_equals_the_fraction_rule(
    ask: int, over: int, devices: int, slots: int, slot_seconds: int, fee_bps: int, pi_q: int | None, rent_q: int
) -> None:
    limit = max(0, ask + over)
    args = (ask, limit, devices, slots * slot_seconds, fee_bps, pi_q, rent_q)
    assert piece_amounts(*args) == rule_with_fractions(*args)


@given(st.floats(-1e9, 1e9, allow_nan=False))
def test_quantized_is_the_figure_in_ten_thousandths(v: float) -> None:
    got = quantized(v)
    assert abs(Fraction(got, 10000) - Fraction(repr(v))) <= Fraction(1, 20000)
