"""Postings of one settlement record: buyer debit = provider credit + exchange fee, exactly."""

from __future__ import annotations

from dataclasses import dataclass

from exchange.billing.errors import BillingError
from exchange.billing.rounding import div_half_even, require_int

BPS = 10_000


@dataclass(frozen=True)
class Postings:
    """Three integer-fen postings; the fee is rounded, the provider credit is the exact remainder."""

    buyer_debit_fen: int
    provider_credit_fen: int
    fee_fen: int

    def as_dict(self) -> dict[str, int]:
        """Plain form for records and JSON."""
        return {
            "buyer_debit_fen": self.buyer_debit_fen,
            "provider_credit_fen": self.provider_credit_fen,
            "fee_fen": self.fee_fen,
        }


def fee_fen(buyer_amount_fen: int, fee_bps: int) -> int:
    """Exchange fee: fee_bps basis points of the buyer amount, rounded half to even."""
    require_int("buyer_amount_fen", buyer_amount_fen)
    require_int("fee_bps", fee_bps)
    if fee_bps > BPS:
        raise BillingError("fee_bps must be <= 10000", field="fee_bps")
    return div_half_even(buyer_amount_fen * fee_bps, BPS)


def postings_for(buyer_amount_fen: int, fee_bps: int) -> Postings:
    """Postings for a buyer amount: fee rounded half-even, provider credit = debit - fee (balances exactly)."""
    fee = fee_fen(buyer_amount_fen, fee_bps)
    postings = Postings(buyer_amount_fen, buyer_amount_fen - fee, fee)
    verify_postings(postings)
    return postings


def verify_postings(postings: Postings) -> None:
    """Return None when the postings are non-negative ints that balance, else raise BillingError."""
    for name in ("buyer_debit_fen", "provider_credit_fen", "fee_fen"):
        require_int(name, getattr(postings, name))
    if postings.buyer_debit_fen != postings.provider_credit_fen + postings.fee_fen:
        raise BillingError(
            "postings do not balance: buyer debit != provider credit + fee",
            postings=postings.as_dict(),
        )
