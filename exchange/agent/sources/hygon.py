"""Hygon DCU `hy-smi --json` -> devices with catalogue codes (pure)."""

from __future__ import annotations

from exchange.agent.sources.model import Scan
from exchange.agent.sources.tables import parse_card_dict

TOOL = "hy-smi"
COMMAND = (TOOL, "--showproductname", "--showuse", "--json")
RULES = ((r"K100[_ -]?AI", "HG-K100-AI"), (r"\bZ100", "HG-Z100"))


def parse(text: str) -> Scan:
    """Devices from `hy-smi --showproductname --showuse --json` (rocm-smi style card objects)."""
    return parse_card_dict(
        TOOL,
        "hygon",
        text,
        RULES,
        product_keys=("Card Series", "Card series", "Device Name"),
        use_keys=("DCU use (%)", "HCU use (%)"),
    )
