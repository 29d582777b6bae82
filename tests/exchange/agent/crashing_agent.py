"""`hetex agent run` that dies like kill -9 (exit 9, no clean-up) right after the exchange accepted its first
report and before the journal records it: the crash window that only an idempotent resend keeps exact.
Run as `python -m tests.exchange.agent.crashing_agent --config agent.toml` (the product CLI has no such hook)."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from exchange.agent.journal import Journal
from exchange.cli.main import main


def _die_before_recording(self: Journal, *args: Any, **kwargs: Any) -> NoReturn:
    """Replaces Journal.mark_sent: the exchange has the report, the journal never learns it."""
    os._exit(9)


if __name__ == "__main__":
    Journal.mark_sent = _die_before_recording  # type: ignore[method-assign,assignment]
    sys.exit(main(["agent", "run", *sys.argv[1:]]))
