"""A time-to-live cache of one value whose computation is shared by concurrent callers (the public market)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: The public market page is computed at most this often and shared by every viewer (it shows its "as of").
PUBLIC_MARKET_SECONDS = 5.0


class Ttl(Generic[T]):
    """The last value of `factory`, recomputed when older than `seconds`; one computation at a time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._value: T | None = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    def clear(self) -> None:
        """Forget the value (the next `get` recomputes)."""
        self._at = float("-inf")

    def _fresh(self) -> bool:
        return self._value is not None and time.monotonic() - self._at < self.seconds

    async def get(self, factory: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or a new one from `factory` (callers arriving meanwhile wait for it)."""
        if self._fresh():
            assert self._value is not None
            return self._value
        async with self._lock:
            if not self._fresh():
                self._value = await factory()
                self._at = time.monotonic()
            assert self._value is not None
            return self._value
