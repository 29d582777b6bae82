"""Domain errors of the matching package (a bad snapshot is a validation error with a stable code)."""

from __future__ import annotations

from identifiers.errors import ValidationError


class MarketError(ValidationError):
    """A market snapshot or clearing result breaks a documented rule."""

    code = "invalid_market"
