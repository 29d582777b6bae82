"""Kunlunxin `xpu-smi` summary table -> devices with catalogue codes (pure)."""

from __future__ import annotations

from exchange.agent.sources.model import Scan
from exchange.agent.sources.tables import parse_summary_table

TOOL = "xpu-smi"
COMMAND = (TOOL,)
RULES = ((r"\bP800\b", "KLX-P800"), (r"\bR200\b", "KLX-R200"))


def parse(text: str) -> Scan:
    """Devices from the `xpu-smi` summary table."""
    return parse_summary_table(TOOL, "kunlunxin", text, RULES)
