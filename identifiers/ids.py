"""Time-ordered record ids (UUIDv7) for orders, contracts, usage and settlement records."""

from __future__ import annotations

import uuid

import uuid6


def new_id() -> uuid.UUID:
    """Return a fresh UUIDv7 (time-ordered, so ids sort by creation time)."""
    value = uuid6.uuid7()
    return uuid.UUID(bytes=value.bytes)


def new_id_str() -> str:
    """Return a fresh UUIDv7 in its canonical hyphenated lower-case text form."""
    return str(new_id())
