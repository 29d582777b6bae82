"""Display helpers for the console templates: yuan from fen, UTC times, percentages (no I/O)."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any


def yuan(fen: Any) -> str:
    """Integer or Decimal fen as yuan with thousands separators: 123456 -> '¥1,234.56'."""
    if fen is None or fen == "":
        return "–"
    value = (Decimal(str(fen)) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return f"¥{value:,}"


def number(value: Any, places: int = 0) -> str:
    """A number with thousands separators and `places` decimals."""
    if value is None or value == "":
        return "–"
    q = Decimal(1).scaleb(-places) if places else Decimal(1)
    return f"{Decimal(str(value)).quantize(q, rounding=ROUND_HALF_EVEN):,}"


def when(epoch: Any) -> str:
    """Epoch seconds as 'YYYY-MM-DD HH:MM UTC'."""
    if epoch is None:
        return "–"
    return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def day(epoch: Any) -> str:
    """Epoch seconds as 'MM-DD'."""
    return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).strftime("%m-%d")


def percent(value: Any) -> str:
    """A ratio (0..1) as a percentage with one decimal."""
    if value is None or value == "":
        return "–"
    return f"{Decimal(str(value)) * 100:.1f}%"


FILTERS = {"yuan": yuan, "number": number, "when": when, "day": day, "percent": percent}
