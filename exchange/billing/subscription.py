"""Subscription billing: a price per device per month or year, prorated by time covered in the period."""

from __future__ import annotations

from exchange.billing.errors import BillingError
from exchange.billing.rounding import div_half_even, require_int


def subscription_fen(price_fen_per_device: int, devices: int, covered_seconds: int, period_seconds: int) -> int:
    """price x devices x covered / period, rounded half-even (covered = the contract's time in the period)."""
    require_int("price_fen_per_device", price_fen_per_device)
    require_int("devices", devices)
    require_int("covered_seconds", covered_seconds)
    require_int("period_seconds", period_seconds, minimum=1)
    if covered_seconds > period_seconds:
        raise BillingError("covered time exceeds the billing period", field="covered_seconds")
    return div_half_even(price_fen_per_device * devices * covered_seconds, period_seconds)
