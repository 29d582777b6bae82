"""Iluvatar CoreX `ixsmi` (nvidia-smi compatible CSV query mode) -> devices with catalogue codes (pure)."""

from __future__ import annotations

from exchange.agent.sources.model import Scan
from exchange.agent.sources.tables import CSV_QUERY_FIELDS, parse_csv_query

TOOL = "ixsmi"
COMMAND = (TOOL, f"--query-gpu={','.join(CSV_QUERY_FIELDS)}", "--format=csv,nounits")
RULES = (
    (r"BI-?V150", "IX-BI-V150"),
    (r"BI-?V100", "IX-BI-V100"),
    (r"MR-?V100", "IX-MR-V100"),
)


def parse(text: str) -> Scan:
    """Devices from `ixsmi --query-gpu=index,uuid,name,pci.bus_id,utilization.gpu --format=csv,nounits`."""
    return parse_csv_query(TOOL, "iluvatar", text, RULES)
