"""Cambricon `cnmon info -j` (JSON) -> devices with catalogue codes (pure)."""

from __future__ import annotations

from typing import Any

from exchange.agent.sources.model import Device, Scan, SourceParseError, as_int, clamp_pct, map_model, scan_of
from exchange.agent.sources.tables import load_json

TOOL = "cnmon"
COMMAND = (TOOL, "info", "-u", "-j")
RULES = ((r"MLU370-X8", "CAM-MLU370-X8"), (r"MLU590", "CAM-MLU590"))


def _card(n: int, card: Any) -> Device:
    if not isinstance(card, dict):
        raise SourceParseError(TOOL, f"CnmonInfo[{n}]: expected an object")
    index = card.get("CardNum")
    if isinstance(index, str) and index.isdigit():
        index = int(index)
    if not isinstance(index, int) or isinstance(index, bool):
        raise SourceParseError(TOOL, f"CnmonInfo[{n}]: CardNum is not a number")
    name = card.get("ProductName")
    util_section = card.get("Utilization")
    util = as_int(util_section.get("MLUAverage")) if isinstance(util_section, dict) else None
    uuid = card.get("UUID")
    readable = isinstance(name, str) and name not in ("", "N/A") and util is not None
    return Device(
        "cambricon",
        index,
        uuid if isinstance(uuid, str) and uuid not in ("", "N/A") else f"cnmon:{index}",
        name if isinstance(name, str) and name else "unknown",
        map_model(name, RULES) if isinstance(name, str) else None,
        healthy=readable,
        utilization_pct=clamp_pct(util) if readable else None,
        note=None if readable else "the card answers no utilisation (failed or not initialised)",
    )


def parse(text: str) -> Scan:
    """Devices from `cnmon info -u -j`: {"CnmonInfo": [{"CardNum", "ProductName", "UUID", "Utilization"}]}."""
    if not text.strip():
        return Scan(TOOL)
    data = load_json(TOOL, text)
    if not isinstance(data, dict) or not isinstance(data.get("CnmonInfo", []), list):
        raise SourceParseError(TOOL, "expected an object with a CnmonInfo list")
    return scan_of(TOOL, [_card(n, c) for n, c in enumerate(data.get("CnmonInfo", []))])
