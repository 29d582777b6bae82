"""The simulated source (same interface as the vendor tools): a JSON state a test or bench edits (pure parse).

{"devices": [{"model": "NV-H100-SXM", "count": 8, "utilization_pct": 90}], "failed": ["sim-NV-H100-SXM-3"],
 "removed": ["sim-NV-H100-SXM-7"]}: device uids are sim-<model>-<i>; failed ones stay listed but unhealthy,
removed ones disappear (as when a card is pulled or the driver loses it).
"""

from __future__ import annotations

from typing import Any

from exchange.agent.sources.model import Device, Scan, SourceParseError, scan_of
from exchange.agent.sources.tables import load_json

TOOL = "simulated"


def parse(text: str) -> Scan:
    """Devices of a simulated node state."""
    data: Any = load_json(TOOL, text)
    if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
        raise SourceParseError(TOOL, "expected an object with a devices list")
    failed = set(_names(data, "failed"))
    removed = set(_names(data, "removed"))
    devices: list[Device] = []
    for n, group in enumerate(data["devices"]):
        if not isinstance(group, dict):
            raise SourceParseError(TOOL, f"devices[{n}]: expected an object")
        model, count, util = group.get("model"), group.get("count"), group.get("utilization_pct", 100)
        if (
            not isinstance(model, str)
            or not isinstance(count, int)
            or isinstance(count, bool)
            or not 0 <= count <= 4096
        ):
            raise SourceParseError(TOOL, f"devices[{n}]: needs a model code and a count in 0..4096")
        if not isinstance(util, int) or isinstance(util, bool) or not 0 <= util <= 100:
            raise SourceParseError(TOOL, f"devices[{n}]: utilization_pct must be 0..100")
        for i in range(count):
            uid = f"sim-{model}-{i}"
            if uid in removed:
                continue
            ok = uid not in failed
            devices.append(
                Device(
                    "simulated",
                    len(devices),
                    uid,
                    model,
                    model,
                    healthy=ok,
                    utilization_pct=util if ok else None,
                    note=None if ok else "simulated failure",
                )
            )
    return scan_of(TOOL, devices)


def _names(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SourceParseError(TOOL, f"{key} must be a list of device ids")
    return value
