"""Times and durations as people type and read them: ISO 8601, epoch seconds, `now+2h`; `8h`, `3d`, `PT90M`."""

from __future__ import annotations

import argparse
import re
import time

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_SHORT = re.compile(r"^\s*(?:(\d+)\s*([smhdw]))+\s*$")
_PART = re.compile(r"(\d+)\s*([smhdw])")
_ISO = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_RELATIVE = re.compile(r"^now\s*(?:([+-])\s*(.+))?$")
_HELP_TIME = "ISO 8601 (2026-12-05T09:00+08:00), epoch seconds, now, or now+2h / now-1d"
_HELP_DURATION = "8h, 90m, 3d, 1h30m, PT90M or seconds"


def parse_duration(text: str) -> int:
    """Seconds in `text`: plain seconds, `8h`, `1h30m`, `3d`, `2w` or ISO 8601 `PT90M` / `P1DT2H`."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    if _SHORT.match(value.lower()):
        return sum(int(n) * _UNITS[u] for n, u in _PART.findall(value.lower()))
    iso = _ISO.match(value.upper())
    if iso and any(iso.groups()) and not value.upper().endswith("T"):
        weeks, days, hours, minutes, seconds = (int(g or 0) for g in iso.groups())
        return weeks * 604_800 + days * 86_400 + hours * 3600 + minutes * 60 + seconds
    raise ValueError(f"not a duration: {text!r} (use {_HELP_DURATION})")


def parse_time(text: str, *, now: float | None = None) -> int:
    """Epoch seconds of `text`: epoch seconds, ISO 8601 (no offset = local time), `now`, `now+2h`, `now-PT30M`."""
    from datetime import datetime

    value = text.strip()
    current = time.time() if now is None else now
    if value.isdigit():
        return int(value)
    rel = _RELATIVE.match(value.lower())
    if rel:
        sign, amount = rel.groups()
        delta = 0 if amount is None else parse_duration(amount)
        return int(current) + (-delta if sign == "-" else delta)
    iso = value.replace(" ", "T", 1) if re.match(r"^\d{4}-\d\d-\d\d \d", value) else value
    try:
        dt = datetime.fromisoformat(iso.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use {_HELP_TIME})") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # naive: the local zone, as a person means it
    return int(dt.timestamp())


def time_arg(text: str) -> int:
    """argparse type: a time (see parse_time)."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_arg(text: str) -> int:
    """argparse type: a duration in seconds (see parse_duration)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds


def rfc3339(epoch: int | float) -> str:
    """Machine form: RFC 3339 UTC, e.g. 2026-12-05T01:00:00Z."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_time(epoch: int | float, *, utc: bool = False, now: float | None = None, short: bool = False) -> str:
    """People's form: local (or UTC) date and time, with `in 2h` / `3h ago` when within a week.
    short: the time alone today, `Dec 05 09:00` this year (table cells)."""
    from datetime import UTC, datetime

    current = time.time() if now is None else now
    dt = datetime.fromtimestamp(epoch, UTC) if utc else datetime.fromtimestamp(epoch, UTC).astimezone()
    today = datetime.fromtimestamp(current, UTC) if utc else datetime.fromtimestamp(current, UTC).astimezone()
    if short and dt.date() == today.date():
        text = dt.strftime("%H:%M")
    elif short and dt.year == today.year:
        text = dt.strftime("%b %d %H:%M")
    else:
        text = dt.strftime("%Y-%m-%d %H:%M") + ("" if short or not utc else " UTC")
    delta = int(epoch - current)
    if abs(delta) < 60:
        return text + " (now)"
    if abs(delta) < 7 * 86_400:
        span = human_duration(abs(delta), coarse=True)
        return text + (f" (in {span})" if delta > 0 else f" ({span} ago)")
    return text


def human_duration(seconds: int, *, coarse: bool = False) -> str:
    """`1h30m`, `3d`, `45s` (coarse: the largest one or two units)."""
    if seconds == 0:
        return "0s"
    parts = []
    rest = int(seconds)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts[:2] if coarse else parts)


def zone_note(utc: bool) -> str:
    """Which zone human times are in."""
    from datetime import UTC, datetime

    if utc:
        return "times in UTC"
    offset = datetime.now(UTC).astimezone().strftime("%z")
    return f"times in local zone (UTC{offset[:3]}:{offset[3:]}); --utc for UTC"


TIME_HELP = _HELP_TIME
DURATION_HELP = _HELP_DURATION
