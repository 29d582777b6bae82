"""Project billing: a fixed price paid in milestones, each a share (basis points) of the price.

Amounts are rounded on the cumulative share: milestone i gets round(P x S_i) - round(P x S_{i-1}) where
S_i is the sum of the first i shares. The last milestone therefore takes the remainder, the amounts sum
to P exactly, none is negative (rounding is monotone), and each is within 1 fen of its exact share.
"""

from __future__ import annotations

from collections.abc import Sequence

from exchange.billing.errors import BillingError
from exchange.billing.postings import BPS
from exchange.billing.rounding import div_half_even, require_int


def milestone_amounts(fixed_price_fen: int, shares_bps: Sequence[int]) -> list[int]:
    """Each milestone's amount in fen; they sum to `fixed_price_fen` exactly (the last takes the remainder)."""
    require_int("fixed_price_fen", fixed_price_fen)
    if not shares_bps:
        raise BillingError("a project needs at least one milestone", field="milestones")
    for i, share in enumerate(shares_bps):
        require_int(f"milestones.{i}.share_bps", share, minimum=1)
    if sum(shares_bps) != BPS:
        raise BillingError("milestone shares must sum to 10000 bps", field="milestones", total=sum(shares_bps))
    amounts: list[int] = []
    cumulative_share = 0
    billed = 0
    for share in shares_bps[:-1]:
        cumulative_share += share
        upto = div_half_even(fixed_price_fen * cumulative_share, BPS)
        amounts.append(upto - billed)
        billed = upto
    amounts.append(fixed_price_fen - billed)
    return amounts
