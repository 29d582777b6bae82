"""Billing errors: inputs that break a billing rule (bad terms, unbalanced postings)."""

from __future__ import annotations

from identifiers.errors import ValidationError


class BillingError(ValidationError):
    """Billing inputs or terms that break a rule in specs/billing.md."""

    code = "invalid_billing"
