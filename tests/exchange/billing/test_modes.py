"""Unit tests of the four billing modes, postings and rounding, with hand-worked amounts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from exchange.billing import (
    BillingError,
    Postings,
    VolumeBand,
    billing_periods,
    calendar_period,
    compute_tier_fen,
    div_half_even,
    milestone_amounts,
    per_minute_fen,
    postings_for,
    subscription_fen,
    verify_postings,
)
from exchange.billing.tiers import load_tier_table

SPECS = Path(__file__).resolve().parents[3] / "specs"
LADDER = (VolumeBand(0, 0), VolumeBand(1000, 500), VolumeBand(10000, 1000))


@pytest.mark.parametrize(
    ("num", "den", "want"),
    [(5, 2, 2), (7, 2, 4), (-5, 2, -2), (-7, 2, -4), (1, 3, 0), (2, 3, 1), (25, 10, 2), (35, 10, 4), (0, 7, 0)],
)
def test_div_half_even(num: int, den: int, want: int) -> None:
    assert div_half_even(num, den) == want


def test_div_half_even_decimal_is_exact() -> None:
    # 0.125 x 4 = 0.5 exactly -> ties to even 0; 1.5 -> 2
    assert div_half_even(Decimal("0.125") * 4, 1) == 0
    assert div_half_even(Decimal("1.5"), 1) == 2


def test_per_minute() -> None:
    # 3000 fen/device-hour x 500 device-minutes / 60 = 25000
    assert per_minute_fen(3000, 500) == 25000
    # 1 fen x 30 minutes / 60 = 0.5 -> half-even 0; 1 x 90 / 60 = 1.5 -> 2
    assert per_minute_fen(1, 30) == 0
    assert per_minute_fen(1, 90) == 2


def test_floats_refused() -> None:
    with pytest.raises(BillingError):
        per_minute_fen(3000.0, 500)  # type: ignore[arg-type]
    with pytest.raises(BillingError):
        compute_tier_fen(200, 1.25, 60, 0, LADDER)  # type: ignore[arg-type]
    with pytest.raises(BillingError):
        postings_for(True, 100)  # type: ignore[arg-type]


def test_postings_balance_and_fee_rounding() -> None:
    # 1% of 25050 = 250.5 -> half-even 250; provider 24800
    p = postings_for(25050, 100)
    assert p == Postings(25050, 24800, 250)
    # 1% of 25150 = 251.5 -> 252
    assert postings_for(25150, 100).fee_fen == 252
    with pytest.raises(BillingError):
        verify_postings(Postings(100, 90, 9))


def test_compute_tier_example_in_yaml_matches() -> None:
    doc = yaml.safe_load((SPECS / "billing-tiers.yaml").read_text())
    table = load_tier_table(SPECS / "billing-tiers.yaml")
    ex = doc["example"]
    amount = compute_tier_fen(
        table.price(ex["tier"]), ex["scu_per_device"], ex["device_minutes"], ex["prior_device_minutes"], table.ladder
    )
    assert amount == ex["amount_fen"]
    # By hand: 1250 SCU-h: 1000 x 200 + 250 x 200 x 0.95 = 200000 + 47500
    assert amount == 247500


def test_compute_tier_prior_volume_moves_into_discount_band() -> None:
    # 600 device-minutes of a 2-SCU device = 20 SCU-h; with 995 SCU-h already billed:
    # 5 SCU-h at full 100 fen = 500, 15 SCU-h at 95 fen = 1425 -> 1925
    prior = 995 * 60 // 2  # 29850 device-minutes = 995 SCU-h
    assert compute_tier_fen(100, "2", 600, prior, LADDER) == 1925


def test_unknown_tier_and_bad_ladder() -> None:
    table = load_tier_table(SPECS / "billing-tiers.yaml")
    with pytest.raises(BillingError):
        table.price("gold")
    with pytest.raises(BillingError):
        compute_tier_fen(100, "1", 60, 0, (VolumeBand(10, 0),))
    with pytest.raises(BillingError):
        compute_tier_fen(100, "1", 60, 0, (VolumeBand(0, 500), VolumeBand(10, 100)))


def test_subscription_prorated() -> None:
    # 90000 fen per device-month, 8 devices, 10 of 30 days: 90000 x 8 x 10 / 30 = 240000
    day = 86400
    assert subscription_fen(90000, 8, 10 * day, 30 * day) == 240000
    # 7 of 31 days, 1 device at 100000: 22580.645... -> 22581
    assert subscription_fen(100000, 1, 7 * day, 31 * day) == 22581
    with pytest.raises(BillingError):
        subscription_fen(1, 1, 2, 1)


def test_milestones_sum_exactly_and_last_takes_remainder() -> None:
    # 1000001 fen in 3 x 3333 bps + 1 bps, rounded on the cumulative share:
    #   3333: 333300.3333 -> 333300;  6666: 666600.6666 -> 666601;  9999: 999900.9999 -> 999901
    #   amounts 333300, 666601 - 333300 = 333301, 999901 - 666601 = 333300, last 1000001 - 999901 = 100
    assert milestone_amounts(1_000_001, [3333, 3333, 3333, 1]) == [333300, 333301, 333300, 100]
    # the case where per-share rounding would go negative: 10 fen, six 15% shares + 10%
    amounts = milestone_amounts(10, [1500] * 6 + [1000])
    assert sum(amounts) == 10 and min(amounts) >= 0
    with pytest.raises(BillingError):
        milestone_amounts(100, [5000, 4000])


def test_calendar_periods_in_china_standard_time() -> None:
    # 2026-01-01 00:00 +08:00 = 1767196800; January has 31 days
    jan1 = 1767196800
    assert calendar_period(jan1) == (jan1, jan1 + 31 * 86400)
    assert calendar_period(jan1 - 1) == (jan1 - 31 * 86400, jan1)
    assert calendar_period(jan1 + 5, "year") == (jan1, jan1 + 365 * 86400)
    periods = billing_periods(jan1 - 3600, jan1 + 40 * 86400)
    assert [p[0] for p in periods] == [jan1 - 3600, jan1, jan1 + 31 * 86400]
    assert periods[-1] == (jan1 + 31 * 86400, jan1 + 40 * 86400, 28 * 86400)
