"""Huawei Ascend `npu-smi info` table -> devices (one per NPU chip) with catalogue codes (pure)."""

from __future__ import annotations

import re

from exchange.agent.sources.model import (
    Device,
    Scan,
    SourceParseError,
    as_int,
    clamp_pct,
    map_model,
    require_lines,
    scan_of,
)

TOOL = "npu-smi"
COMMAND = (TOOL, "info")
RULES = (
    (r"910B2", "HW-910B2"),
    (r"910B3", "HW-910B3"),
    (r"910B4", "HW-910B4"),
    (r"910C", "HW-910C"),
    (r"310P", "HW-310P"),
    (r"950", "HW-950PR"),
)
#: npu-smi health states; Warning still serves work, Alarm and Critical do not
HEALTHY_STATES = ("OK", "Warning")
KNOWN_STATES = ("OK", "Warning", "Alarm", "Critical", "NA", "Unknown")
_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+([^|\s]+)\s*\|\s*([^|\s]+)\s*\|")
_CHIP_ROW = re.compile(
    r"^\|\s*(\d+)\s*(\d+)?\s*\|\s*([0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d|NA)\s*\|\s*(\S+)"
)


def parse(text: str) -> Scan:
    """Devices from `npu-smi info`: each NPU row (id, name, health) and its chip rows (chip, bus id, AICore%)."""
    lines = require_lines(TOOL, text)
    if not lines:
        return Scan(TOOL)
    if not any("npu-smi" in line.lower() for line in lines[:3]):
        raise SourceParseError(TOOL, "no npu-smi banner in the output")
    devices: list[Device] = []
    npu: tuple[int, str, str] | None = None
    for line in lines:
        if "Process id" in line or "Process name" in line:
            break
        m = _NPU_ROW.match(line)
        if m is not None and m.group(3) in KNOWN_STATES:
            npu = (int(m.group(1)), m.group(2), m.group(3))
            continue
        c = _CHIP_ROW.match(line)
        if c is not None and npu is not None:
            npu_id, name, health = npu
            chip = int(c.group(1))
            bus = c.group(3)
            ok = health in HEALTHY_STATES
            devices.append(
                Device(
                    "huawei",
                    npu_id * 16 + chip,
                    f"bus:{bus}" if bus != "NA" else f"npu:{npu_id}:{chip}",
                    name,
                    map_model(name, RULES),
                    healthy=ok,
                    utilization_pct=clamp_pct(as_int(c.group(4))) if ok else None,
                    note=None if ok else f"health {health}",
                )
            )
    if not devices and any(_NPU_ROW.match(x) for x in lines):
        raise SourceParseError(TOOL, "NPU rows without chip rows")
    return scan_of(TOOL, devices)
