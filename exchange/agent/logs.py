"""Structured logs of the agent: one JSON object per line (time, level, event, fields); no secrets."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

log = logging.getLogger("hetex.agent")


class JsonLines(logging.Formatter):
    """Formats records made by `event()` as JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        """{"ts", "level", "event", ...fields}."""
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        return json.dumps(out, sort_keys=False, default=str)


def setup(level: int = logging.INFO) -> None:
    """Send the agent's events to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one named event with its fields."""
    log.log(level, name, extra={"fields": fields, "at": time.time()})
