"""MetaX `mx-smi` summary table -> devices with catalogue codes (pure)."""

from __future__ import annotations

from exchange.agent.sources.model import Scan
from exchange.agent.sources.tables import parse_summary_table

TOOL = "mx-smi"
COMMAND = (TOOL,)
RULES = ((r"\bC500\b", "MX-C500"),)


def parse(text: str) -> Scan:
    """Devices from the `mx-smi` summary table."""
    return parse_summary_table(TOOL, "metax", text, RULES)
