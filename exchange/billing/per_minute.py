"""Per-minute billing: buyer price (fen per device-hour) x device-minutes used / 60, half-even."""

from __future__ import annotations

from exchange.billing.rounding import div_half_even, require_int


def per_minute_fen(price_fen_per_device_hour: int, device_minutes: int) -> int:
    """Amount for `device_minutes` (devices x minutes used) at a per-device-hour price."""
    require_int("price_fen_per_device_hour", price_fen_per_device_hour)
    require_int("device_minutes", device_minutes)
    return div_half_even(price_fen_per_device_hour * device_minutes, 60)
