"""Contract billing terms per mode, their billing periods, and the amount of one period (pure).

`parse_terms` validates a contract's `billing_terms` JSON for its mode; `plan_periods` lists the periods
a contract is settled in; `period_amount` prices one period from summed usage. specs/billing.md has the
rules; this module only composes the mode functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from exchange.billing.compute_tier import VolumeBand, compute_tier_fen
from exchange.billing.errors import BillingError
from exchange.billing.per_minute import per_minute_fen
from exchange.billing.periods import BILLING_UTC_OFFSET_SECONDS, INTERVALS, billing_periods
from exchange.billing.project import milestone_amounts
from exchange.billing.rounding import require_decimal, require_int
from exchange.billing.subscription import subscription_fen

BILLING_MODES = ("per_minute", "compute_tier", "subscription", "project")


@dataclass(frozen=True)
class PerMinuteTerms:
    """Per-minute: the contract's buyer price per device-hour applies; no extra terms."""

    mode: str = "per_minute"


@dataclass(frozen=True)
class ComputeTierTerms:
    """Compute tier: tier code, its price per SCU-hour and SCU per device (snapshotted at contract time)."""

    tier: str
    price_fen_per_scu_hour: int
    scu_per_device: Decimal
    mode: str = "compute_tier"


@dataclass(frozen=True)
class SubscriptionTerms:
    """Subscription: price per device per calendar month or year."""

    interval: str
    price_fen_per_device: int
    mode: str = "subscription"


@dataclass(frozen=True)
class Milestone:
    """One project milestone: a share of the fixed price, due at an instant."""

    name: str
    share_bps: int
    due_at: int


@dataclass(frozen=True)
class ProjectTerms:
    """Project: a fixed price paid in milestones."""

    fixed_price_fen: int
    milestones: tuple[Milestone, ...]
    mode: str = "project"


Terms = PerMinuteTerms | ComputeTierTerms | SubscriptionTerms | ProjectTerms


@dataclass(frozen=True)
class Period:
    """A billing period [start, end) of a contract; `full_seconds` is the calendar period's length."""

    start: int
    end: int
    full_seconds: int
    milestone: int | None = None


def _get(terms: dict[str, Any], name: str) -> Any:
    if name not in terms:
        raise BillingError(f"billing_terms.{name} is required", field=f"billing_terms.{name}")
    return terms[name]


def parse_terms(mode: str, terms: dict[str, Any], *, start_at: int, end_at: int) -> Terms:
    """Typed, validated terms for `mode`; raises BillingError naming the bad field."""
    if not isinstance(terms, dict):
        raise BillingError("billing_terms must be an object", field="billing_terms")
    if mode == "per_minute":
        return PerMinuteTerms()
    if mode == "compute_tier":
        tier = _get(terms, "tier")
        if not isinstance(tier, str):
            raise BillingError("billing_terms.tier must be a string", field="billing_terms.tier")
        return ComputeTierTerms(
            tier,
            require_int("billing_terms.price_fen_per_scu_hour", _get(terms, "price_fen_per_scu_hour")),
            require_decimal("billing_terms.scu_per_device", _get(terms, "scu_per_device")),
        )
    if mode == "subscription":
        interval = _get(terms, "interval")
        if interval not in INTERVALS:
            raise BillingError(f"billing_terms.interval must be one of {INTERVALS}", field="billing_terms.interval")
        return SubscriptionTerms(
            interval, require_int("billing_terms.price_fen_per_device", _get(terms, "price_fen_per_device"))
        )
    if mode == "project":
        fixed = require_int("billing_terms.fixed_price_fen", _get(terms, "fixed_price_fen"))
        raw = _get(terms, "milestones")
        if not isinstance(raw, list) or not raw:
            raise BillingError("billing_terms.milestones must be a non-empty list", field="billing_terms.milestones")
        milestones = []
        previous = start_at
        for i, m in enumerate(raw):
            where = f"billing_terms.milestones.{i}"
            if not isinstance(m, dict) or not isinstance(m.get("name"), str):
                raise BillingError(f"{where}.name must be a string", field=f"{where}.name")
            due = require_int(f"{where}.due_at", m.get("due_at"))
            if not previous < due <= end_at:
                raise BillingError(
                    f"{where}.due_at must be after the previous milestone and within the contract",
                    field=f"{where}.due_at",
                )
            previous = due
            share = require_int(f"{where}.share_bps", m.get("share_bps"), minimum=1)
            milestones.append(Milestone(m["name"], share, due))
        milestone_amounts(fixed, [m.share_bps for m in milestones])  # validates shares
        return ProjectTerms(fixed, tuple(milestones))
    raise BillingError(f"billing_mode must be one of {BILLING_MODES}", field="billing_mode")


def terms_to_json(terms: Terms) -> dict[str, Any]:
    """JSON form of typed terms (decimals as strings; no floats)."""
    if isinstance(terms, ComputeTierTerms):
        return {
            "tier": terms.tier,
            "price_fen_per_scu_hour": terms.price_fen_per_scu_hour,
            "scu_per_device": str(terms.scu_per_device),
        }
    if isinstance(terms, SubscriptionTerms):
        return {"interval": terms.interval, "price_fen_per_device": terms.price_fen_per_device}
    if isinstance(terms, ProjectTerms):
        return {
            "fixed_price_fen": terms.fixed_price_fen,
            "milestones": [{"name": m.name, "share_bps": m.share_bps, "due_at": m.due_at} for m in terms.milestones],
        }
    return {}


def plan_periods(
    terms: Terms, start_at: int, billable_end: int, offset_s: int = BILLING_UTC_OFFSET_SECONDS
) -> list[Period]:
    """The periods a contract is settled in over its billable span [start_at, billable_end)."""
    if billable_end <= start_at:
        return []
    if isinstance(terms, ProjectTerms):
        out = []
        previous = start_at
        for i, m in enumerate(terms.milestones):
            if m.due_at > billable_end:
                break
            out.append(Period(previous, m.due_at, m.due_at - previous, milestone=i))
            previous = m.due_at
        return out
    interval = terms.interval if isinstance(terms, SubscriptionTerms) else "month"
    return [Period(a, b, full) for a, b, full in billing_periods(start_at, billable_end, interval, offset_s)]


@dataclass(frozen=True)
class ContractFacts:
    """The contract fields pricing needs."""

    devices: int
    buyer_price_fen: int


def period_amount(
    terms: Terms,
    contract: ContractFacts,
    period: Period,
    *,
    device_minutes: int,
    prior_device_minutes: int,
    ladder: tuple[VolumeBand, ...],
) -> tuple[int, dict[str, Any]]:
    """Buyer amount (fen) of one period and the figures behind it (for the record's `detail`)."""
    if isinstance(terms, PerMinuteTerms):
        amount = per_minute_fen(contract.buyer_price_fen, device_minutes)
        return amount, {"price_fen_per_device_hour": contract.buyer_price_fen, "device_minutes": device_minutes}
    if isinstance(terms, ComputeTierTerms):
        amount = compute_tier_fen(
            terms.price_fen_per_scu_hour, terms.scu_per_device, device_minutes, prior_device_minutes, ladder
        )
        return amount, {
            "tier": terms.tier,
            "price_fen_per_scu_hour": terms.price_fen_per_scu_hour,
            "scu_per_device": str(terms.scu_per_device),
            "device_minutes": device_minutes,
            "prior_device_minutes": prior_device_minutes,
            "ladder": [[b.from_scu_hours, b.discount_bps] for b in ladder],
        }
    if isinstance(terms, SubscriptionTerms):
        covered = period.end - period.start
        amount = subscription_fen(terms.price_fen_per_device, contract.devices, covered, period.full_seconds)
        return amount, {
            "interval": terms.interval,
            "price_fen_per_device": terms.price_fen_per_device,
            "devices": contract.devices,
            "covered_seconds": covered,
            "period_seconds": period.full_seconds,
        }
    assert period.milestone is not None
    amounts = milestone_amounts(terms.fixed_price_fen, [m.share_bps for m in terms.milestones])
    m = terms.milestones[period.milestone]
    return amounts[period.milestone], {
        "fixed_price_fen": terms.fixed_price_fen,
        "milestone": m.name,
        "milestone_index": period.milestone,
        "share_bps": m.share_bps,
    }


NOMINAL_PERIOD_HOURS = {"month": 30 * 24, "year": 365 * 24}
_PERIOD_ALIASES = {"monthly": "month", "yearly": "year", "month": "month", "year": "year"}


def contract_terms_from_order(
    mode: str, order_terms: dict[str, Any] | None, *, start_at: int, end_at: int, buyer_price_fen: int
) -> dict[str, Any]:
    """Contract terms from an order's terms (specs/billing.md 3): fills what the order leaves to the match.

    subscription: `period` monthly|yearly -> `interval`; price per device defaults to the matched price per
    device-hour x the nominal period (720 h a month, 8760 h a year). project: milestones without `due_at`
    fall due at their cumulative share of the contract span (the last at its end); no milestones means one
    'completion' milestone. compute_tier: `tier_table` names the tier.
    """
    terms = dict(order_terms or {})
    if mode == "subscription":
        period = terms.pop("period", None)
        if period is not None and "interval" not in terms:
            if period not in _PERIOD_ALIASES:
                raise BillingError("billing_terms.period must be monthly or yearly", field="billing_terms.period")
            terms["interval"] = _PERIOD_ALIASES[period]
        terms.setdefault("interval", "month")
        if "price_fen_per_device" not in terms and terms["interval"] in NOMINAL_PERIOD_HOURS:
            terms["price_fen_per_device"] = buyer_price_fen * NOMINAL_PERIOD_HOURS[terms["interval"]]
    elif mode == "project":
        raw = terms.get("milestones") or [{"name": "completion", "share_bps": 10_000}]
        span = end_at - start_at
        cumulative = 0
        milestones = []
        for i, m in enumerate(raw):
            m = dict(m)
            cumulative += int(m.get("share_bps", 0))
            if "due_at" not in m:
                m["due_at"] = end_at if i == len(raw) - 1 else start_at + span * cumulative // 10_000
            milestones.append(m)
        terms["milestones"] = milestones
    elif mode == "compute_tier" and "tier_table" in terms:
        terms.setdefault("tier", terms.pop("tier_table"))
        terms.pop("tier_table", None)
    return terms
