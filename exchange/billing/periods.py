"""Billing periods: calendar months or years in a fixed UTC offset (China Standard Time, no DST)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from exchange.billing.errors import BillingError

BILLING_UTC_OFFSET_SECONDS = 8 * 3600
INTERVALS = ("month", "year")


def _tz(offset_s: int) -> timezone:
    return timezone(timedelta(seconds=offset_s))


def _epoch(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())


def calendar_period(at: int, interval: str = "month", offset_s: int = BILLING_UTC_OFFSET_SECONDS) -> tuple[int, int]:
    """[start, end) epoch seconds of the calendar month or year containing `at` in the billing time zone."""
    if interval not in INTERVALS:
        raise BillingError(f"interval must be one of {INTERVALS}", field="interval")
    local = datetime.fromtimestamp(at, tz=_tz(offset_s))
    if interval == "year":
        start = local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return _epoch(start), _epoch(end)


def billing_periods(
    start: int, end: int, interval: str = "month", offset_s: int = BILLING_UTC_OFFSET_SECONDS
) -> list[tuple[int, int, int]]:
    """The calendar periods covering [start, end): (clipped_start, clipped_end, full_period_seconds) each."""
    if end <= start:
        raise BillingError("a billing span needs end > start", field="end")
    out: list[tuple[int, int, int]] = []
    cursor = start
    while cursor < end:
        p_start, p_end = calendar_period(cursor, interval, offset_s)
        out.append((cursor, min(p_end, end), p_end - p_start))
        cursor = p_end
    return out
