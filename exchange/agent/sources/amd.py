"""AMD `rocm-smi --json` and `amd-smi static --json` -> devices with catalogue codes (pure)."""

from __future__ import annotations

from exchange.agent.sources.model import Device, Scan, SourceParseError, map_model, scan_of
from exchange.agent.sources.tables import load_json, parse_card_dict

TOOL = "rocm-smi"
COMMAND = (TOOL, "--showproductname", "--showuse", "--showuniqueid", "--json")
AMD_SMI_COMMAND = ("amd-smi", "static", "--asic", "--json")
RULES = ((r"MI300X", "AMD-MI300X"), (r"MI250X?\b", "AMD-MI250"))


def parse(text: str) -> Scan:
    """Devices from `rocm-smi --showproductname --showuse --showuniqueid --json`."""
    return parse_card_dict(
        TOOL,
        "amd",
        text,
        RULES,
        product_keys=("Card Series", "Card series", "Card SKU", "Device Name"),
        use_keys=("GPU use (%)",),
    )


def parse_amd_smi(text: str) -> Scan:
    """Devices from `amd-smi static --asic --json`: a list of {"gpu": n, "asic": {"market_name": ...}}."""
    tool = "amd-smi"
    if not text.strip():
        return Scan(tool)
    data = load_json(tool, text)
    if isinstance(data, dict) and isinstance(data.get("gpu_data"), list):
        data = data["gpu_data"]  # newer amd-smi releases wrap the list
    if not isinstance(data, list):
        raise SourceParseError(tool, "expected a JSON list of GPUs")
    devices = []
    for n, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("gpu"), int) or isinstance(item.get("gpu"), bool):
            raise SourceParseError(tool, f"item {n}: expected an object with an integer 'gpu'")
        asic = item.get("asic")
        if not isinstance(asic, dict):
            devices.append(
                Device(
                    "amd",
                    item["gpu"],
                    f"amd-smi:{item['gpu']}",
                    "unknown",
                    None,
                    healthy=False,
                    note="no asic section (device not readable)",
                )
            )
            continue
        raw_name = asic.get("market_name")
        name = raw_name if isinstance(raw_name, str) else ""
        serial = asic.get("asic_serial")
        readable = name not in ("", "N/A")
        devices.append(
            Device(
                "amd",
                item["gpu"],
                str(serial) if isinstance(serial, str) and serial not in ("", "N/A") else f"amd-smi:{item['gpu']}",
                name if readable else "unknown",
                map_model(name, RULES) if readable else None,
                healthy=readable,
                note=None if readable else "market_name not readable",
            )
        )
    return scan_of(tool, devices)
