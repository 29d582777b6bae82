"""Moore Threads `mthreads-gmi` summary table -> devices with catalogue codes (pure)."""

from __future__ import annotations

from exchange.agent.sources.model import Scan
from exchange.agent.sources.tables import parse_summary_table

TOOL = "mthreads-gmi"
COMMAND = (TOOL,)
RULES = ((r"S4000", "MT-S4000"),)


def parse(text: str) -> Scan:
    """Devices from the `mthreads-gmi` summary table."""
    return parse_summary_table(TOOL, "mthreads", text, RULES)
