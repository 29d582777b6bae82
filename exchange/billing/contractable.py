"""Contract terms from an order's terms, and whether an order can ever become a contract (pure).

`contract_terms` is the one place that turns an order's billing terms into a contract's typed terms; a
clearing round's commit calls it for every allocation. The same function answers, before any capacity is
handed out, whether an order's terms can ever be contracted: at submission (`submission_refusal`, 422)
and in each round's snapshot (`snapshot_refusal`, the order sits the round out), so the commit never has
to refuse an allocation for its terms (issue 11 bug 3: an uncontractable order must not starve others).

Every refusal the commit could make for an order's terms, and where it is prevented (tests enumerate it):
- `compute_tier`, unknown tier: refused at submission; skipped in the snapshot if the tier table changed.
- `compute_tier`, model without an SCU figure: such models are removed from the order's acceptable
  models in the snapshot; an order left with none is refused at submission.
- `project`, a milestone shorter than one second (due dates must strictly increase): refused at
  submission unless `duration_seconds x share_bps >= 10000` for every milestone, which makes every lease
  (never shorter than the duration) contractable; checked exactly in the snapshot for older orders.
- anything else `parse_terms` refuses (stored terms edited outside the API): skipped in the snapshot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from exchange.billing.compute_tier import TierTable
from exchange.billing.errors import BillingError
from exchange.billing.postings import BPS
from exchange.billing.terms import Terms, contract_terms_from_order, parse_terms

SCU_QUANTUM = Decimal("0.0001")
DEFAULT_TIER = "standard"


def needs_scu(mode: str) -> bool:
    """True when a contract of `mode` prices by SCU, so its model needs an SCU figure."""
    return mode == "compute_tier"


def contract_terms(
    mode: str,
    order_terms: dict[str, Any] | None,
    *,
    start_at: int,
    end_at: int,
    buyer_price_fen: int,
    model_scu: Decimal | None,
    tiers: TierTable,
) -> Terms:
    """The typed terms a contract of this order signs (specs/billing.md 3); BillingError names the field."""
    terms = contract_terms_from_order(
        mode, order_terms, start_at=start_at, end_at=end_at, buyer_price_fen=buyer_price_fen
    )
    if mode == "compute_tier":
        terms.setdefault("tier", DEFAULT_TIER)
        tier = str(terms["tier"])
        if tier not in tiers.prices:
            raise BillingError(
                f"unknown compute tier {tier!r}: known tiers are {sorted(tiers.prices)}",
                field="billing_terms.tier_table",
            )
        terms.setdefault("price_fen_per_scu_hour", tiers.prices[tier])
        if "scu_per_device" not in terms:
            if model_scu is None:
                raise BillingError(
                    "the model has no SCU figure (compute_tier needs one)", field="billing_terms.scu_per_device"
                )
            terms["scu_per_device"] = str(Decimal(model_scu).quantize(SCU_QUANTUM, rounding=ROUND_HALF_EVEN))
    return parse_terms(mode, terms, start_at=start_at, end_at=end_at)


def snapshot_refusal(
    mode: str, order_terms: dict[str, Any] | None, span_seconds: int, tiers: TierTable
) -> BillingError | None:
    """Why a lease of `span_seconds` for this order could not be contracted (the model's SCU aside), or None."""
    try:
        contract_terms(
            mode, order_terms, start_at=0, end_at=span_seconds, buyer_price_fen=1, model_scu=Decimal(1), tiers=tiers
        )
    except BillingError as exc:
        return exc
    return None


@dataclass
class TermsCheck:
    """snapshot_refusal for one round, remembered per distinct (mode, terms, span): orders share few terms."""

    tiers: TierTable
    _seen: dict[tuple[str, str, int], BillingError | None] = field(default_factory=dict)

    def __call__(self, mode: str, order_terms: dict[str, Any] | None, span_seconds: int) -> BillingError | None:
        """Why this order's terms could not be contracted for a lease of `span_seconds`, or None."""
        if mode == "per_minute":
            return None  # per-minute contracts take no terms from the order
        key = (mode, json.dumps(order_terms, sort_keys=True, default=str), span_seconds)
        if key not in self._seen:
            self._seen[key] = snapshot_refusal(mode, order_terms, span_seconds, self.tiers)
        return self._seen[key]


def submission_refusal(
    mode: str, order_terms: dict[str, Any] | None, duration_seconds: int, tiers: TierTable
) -> BillingError | None:
    """Why an order with these terms could never be contracted, whatever lease a round gives it, or None."""
    terms = order_terms or {}
    if mode == "compute_tier":
        tier = str(terms.get("tier_table", terms.get("tier", DEFAULT_TIER)))
        if tier not in tiers.prices:
            return BillingError(
                f"billing_terms.tier_table: unknown compute tier {tier!r}; known tiers are {sorted(tiers.prices)}",
                field="billing_terms.tier_table",
            )
    if mode == "project":
        for i, m in enumerate(terms.get("milestones") or []):
            share = int(m.get("share_bps", 0))
            if duration_seconds * share < BPS:
                return BillingError(
                    f"billing_terms.milestones.{i}: a milestone of {share} bps of a {duration_seconds} s order lasts"
                    " under one second; need duration_seconds x share_bps >= 10000",
                    field=f"billing_terms.milestones.{i}.share_bps",
                )
    return snapshot_refusal(mode, order_terms, duration_seconds, tiers)
