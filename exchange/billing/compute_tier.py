"""Compute-tier billing: SCU-hours x tier price, less a graduated volume discount (specs/billing-tiers.yaml).

The ladder is graduated over the contract's cumulative SCU-hours, like tax brackets: a band's discount
applies only to the SCU-hours that fall inside the band. So the exact amount of a period depends only on
the cumulative volume before and after it, and splitting a period never changes the exact total.
Volumes are kept in SCU-device-minutes (device-minutes x SCU per device, exact) to avoid dividing early.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from exchange.billing.errors import BillingError
from exchange.billing.postings import BPS
from exchange.billing.rounding import div_half_even, exact_product, exact_sum, require_decimal, require_int


@dataclass(frozen=True)
class VolumeBand:
    """SCU-hours from `from_scu_hours` up to the next band's start get `discount_bps` off the tier price."""

    from_scu_hours: int
    discount_bps: int


@dataclass(frozen=True)
class TierTable:
    """Tier prices (fen per SCU-hour) by tier code and the shared graduated volume ladder."""

    prices: Mapping[str, int]
    ladder: tuple[VolumeBand, ...]

    def price(self, tier: str) -> int:
        """Price of `tier` in fen per SCU-hour."""
        try:
            return self.prices[tier]
        except KeyError:
            raise BillingError(f"unknown compute tier {tier!r}", field="tier", known=sorted(self.prices)) from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TierTable:
        """Validate the parsed YAML document (see specs/billing-tiers.yaml)."""
        tiers = data.get("tiers")
        if not isinstance(tiers, list) or not tiers:
            raise BillingError("tiers must be a non-empty list", field="tiers")
        prices: dict[str, int] = {}
        for i, tier in enumerate(tiers):
            code = tier.get("code") if isinstance(tier, dict) else None
            if not isinstance(code, str) or not code or code in prices:
                raise BillingError("each tier needs a unique code", field=f"tiers.{i}.code")
            prices[code] = require_int(f"tiers.{i}.price_fen_per_scu_hour", tier.get("price_fen_per_scu_hour"))
        bands_raw = data.get("volume_ladder")
        if not isinstance(bands_raw, list) or not bands_raw:
            raise BillingError("volume_ladder must be a non-empty list", field="volume_ladder")
        bands = tuple(
            VolumeBand(
                require_int(f"volume_ladder.{i}.from_scu_hours", b.get("from_scu_hours")),
                require_int(f"volume_ladder.{i}.discount_bps", b.get("discount_bps")),
            )
            for i, b in enumerate(bands_raw)
        )
        return cls(prices, validate_ladder(bands))


def validate_ladder(bands: tuple[VolumeBand, ...]) -> tuple[VolumeBand, ...]:
    """The ladder starts at 0, thresholds strictly increase, discounts stay within [0, 10000] and never fall."""
    if not bands or bands[0].from_scu_hours != 0:
        raise BillingError("the volume ladder must start at 0 SCU-hours", field="volume_ladder")
    for prev, band in itertools.pairwise(bands):
        if band.from_scu_hours <= prev.from_scu_hours:
            raise BillingError("volume ladder thresholds must strictly increase", field="volume_ladder")
        if band.discount_bps < prev.discount_bps:
            raise BillingError("volume ladder discounts must not decrease", field="volume_ladder")
    for band in bands:
        if not 0 <= band.discount_bps <= BPS:
            raise BillingError("discount_bps must be within [0, 10000]", field="volume_ladder")
    return bands


def scu_device_minutes(device_minutes: int, scu_per_device: Decimal | str | int) -> Decimal:
    """Volume in SCU-minutes: device-minutes x SCU per device (exact)."""
    require_int("device_minutes", device_minutes)
    return exact_product(device_minutes, require_decimal("scu_per_device", scu_per_device))


def _ladder_numerator(v0: Decimal, v1: Decimal, price: int, ladder: tuple[VolumeBand, ...]) -> Decimal:
    """Sum over bands of (SCU-minutes inside the band) x price x (10000 - discount_bps), exact."""
    total = Decimal(0)
    for i, band in enumerate(ladder):
        lo = Decimal(band.from_scu_hours * 60)
        hi = Decimal(ladder[i + 1].from_scu_hours * 60) if i + 1 < len(ladder) else None
        start = max(v0, lo)
        end = v1 if hi is None else min(v1, hi)
        if end > start:
            inside = exact_sum(end, -start)
            total = exact_sum(total, exact_product(inside, price, BPS - band.discount_bps))
    return total


def compute_tier_fen(
    price_fen_per_scu_hour: int,
    scu_per_device: Decimal | str | int,
    device_minutes: int,
    prior_device_minutes: int,
    ladder: tuple[VolumeBand, ...],
) -> int:
    """Amount for `device_minutes` used after `prior_device_minutes` already billed on the same contract."""
    require_int("price_fen_per_scu_hour", price_fen_per_scu_hour)
    require_int("prior_device_minutes", prior_device_minutes)
    validate_ladder(ladder)
    v0 = scu_device_minutes(prior_device_minutes, scu_per_device)
    v1 = scu_device_minutes(prior_device_minutes + device_minutes, scu_per_device)
    return div_half_even(_ladder_numerator(v0, v1, price_fen_per_scu_hour, ladder), 60 * BPS)
