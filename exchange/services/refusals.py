"""Refused requests counted by reason and logged at a bounded rate, never stored one row per request
(anyone can send a refused request; storing each would let anyone grow the database)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RefusalLog:
    """Counts refusals by reason; logs the first of each reason and then at most one line per `every` seconds
    per reason, saying how many were refused since the last line."""

    logger: logging.Logger
    what: str
    every: float = 60.0
    clock: Callable[[], float] = time.monotonic
    counts: Counter[str] = field(default_factory=Counter)
    _last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def refused(self, reason: str, detail: str) -> None:
        """Count one refusal; log it unless a line for this reason was written less than `every` s ago."""
        self.counts[reason] += 1
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and now - last[0] < self.every:
            return
        since = self.counts[reason] - (last[1] if last is not None else 0)
        self._last[reason] = (now, self.counts[reason])
        self.logger.warning("%s refused (%s): %s [%d since the last line, %d in all]", self.what, reason, detail,
                            since, self.counts[reason])  # fmt: skip
