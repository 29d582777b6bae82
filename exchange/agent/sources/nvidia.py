"""NVIDIA `nvidia-smi` in CSV query mode -> devices with catalogue codes (pure)."""

from __future__ import annotations

from exchange.agent.sources.model import Scan
from exchange.agent.sources.tables import CSV_QUERY_FIELDS, parse_csv_query

TOOL = "nvidia-smi"
COMMAND = (TOOL, f"--query-gpu={','.join(CSV_QUERY_FIELDS)}", "--format=csv,nounits")
RULES = (
    (r"\bH200\b", "NV-H200-SXM"),
    (r"\bH800\b", "NV-H800-SXM"),
    (r"\bH100\b", "NV-H100-SXM"),
    (r"\bH20\b", "NV-H20"),
    (r"\bA100\b.*80\s*GB.*PCIe", "NV-A100-80G-PCIE"),
    (r"\bA100\b.*80\s*GB", "NV-A100-80G-SXM"),
    (r"\bA100\b.*40\s*GB", "NV-A100-40G-SXM"),
    (r"\bL40S\b", "NV-L40S"),
    (r"\bL20\b", "NV-L20"),
    (r"RTX\s*4090", "NV-RTX4090"),
)


def parse(text: str) -> Scan:
    """Devices from `nvidia-smi --query-gpu=index,uuid,name,pci.bus_id,utilization.gpu --format=csv,nounits`."""
    return parse_csv_query(TOOL, "nvidia", text, RULES)
