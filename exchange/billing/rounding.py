"""Exact money arithmetic: Decimal products in an explicit context, one half-even division per amount.

Every billing amount is a ratio `numerator / denominator` of exact quantities. The numerator is a product
of integers and finite decimals (such as 1.25 SCU per device), computed in MONEY_CONTEXT with Inexact
trapped, so a product that would not fit the precision raises instead of rounding silently. The one
rounding step is `div_half_even`, which divides the exact rationals with integer arithmetic and rounds
half to even: no intermediate rounding, hence no double rounding.
"""

from __future__ import annotations

from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from fractions import Fraction

from exchange.billing.errors import BillingError

MONEY_CONTEXT = Context(
    prec=60,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact, Rounded],
)

Exact = int | Decimal


def require_int(name: str, value: object, *, minimum: int | None = 0) -> int:
    """`value` as an int (bools and floats refused), at least `minimum` when given."""
    if type(value) is not int:
        raise BillingError(f"{name} must be an integer, got {type(value).__name__}", field=name)
    if minimum is not None and value < minimum:
        raise BillingError(f"{name} must be >= {minimum}", field=name)
    return value


def require_decimal(name: str, value: object) -> Decimal:
    """`value` as a finite non-negative Decimal; accepts int, Decimal or a decimal string, never float."""
    if isinstance(value, (bool, float)):
        raise BillingError(f"{name} must be a decimal string or integer, not {type(value).__name__}", field=name)
    if isinstance(value, int | str):
        try:
            value = Decimal(value)
        except InvalidOperation:
            raise BillingError(f"{name} is not a decimal number", field=name) from None
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise BillingError(f"{name} must be a finite non-negative decimal", field=name)
    return value


def exact_product(*factors: Exact) -> Decimal:
    """Product of integers/decimals in MONEY_CONTEXT; raises if the exact result would need rounding."""
    result = Decimal(1)
    for factor in factors:
        if isinstance(factor, (float, bool)):
            raise BillingError(f"money arithmetic refuses {type(factor).__name__}")
        result = MONEY_CONTEXT.multiply(result, Decimal(factor))
    return result


def exact_sum(*terms: Exact) -> Decimal:
    """Sum of integers/decimals in MONEY_CONTEXT (exact, or it raises)."""
    result = Decimal(0)
    for term in terms:
        if isinstance(term, (float, bool)):
            raise BillingError(f"money arithmetic refuses {type(term).__name__}")
        result = MONEY_CONTEXT.add(result, Decimal(term))
    return result


def div_half_even(numerator: Exact, denominator: Exact) -> int:
    """numerator / denominator rounded half to even, as an int (exact rational division, one rounding)."""
    num, den = Fraction(numerator), Fraction(denominator)
    if den <= 0:
        raise BillingError("denominator must be positive")
    ratio = num / den
    q, r = divmod(ratio.numerator, ratio.denominator)
    twice = 2 * r
    if twice > ratio.denominator or (twice == ratio.denominator and q % 2 == 1):
        q += 1
    return int(q)
