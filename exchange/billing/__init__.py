"""Pure billing: integer-fen amounts for the four billing modes and balanced postings (no I/O, no floats)."""

from exchange.billing.compute_tier import TierTable, VolumeBand, compute_tier_fen, scu_device_minutes
from exchange.billing.errors import BillingError
from exchange.billing.per_minute import per_minute_fen
from exchange.billing.periods import BILLING_UTC_OFFSET_SECONDS, billing_periods, calendar_period
from exchange.billing.postings import Postings, postings_for, verify_postings
from exchange.billing.project import milestone_amounts
from exchange.billing.rounding import MONEY_CONTEXT, div_half_even, exact_product
from exchange.billing.subscription import subscription_fen

__all__ = [
    "BILLING_UTC_OFFSET_SECONDS",
    "MONEY_CONTEXT",
    "BillingError",
    "Postings",
    "TierTable",
    "VolumeBand",
    "billing_periods",
    "calendar_period",
    "compute_tier_fen",
    "div_half_even",
    "exact_product",
    "milestone_amounts",
    "per_minute_fen",
    "postings_for",
    "scu_device_minutes",
    "subscription_fen",
    "verify_postings",
]
