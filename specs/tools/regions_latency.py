"""Derive the approximate round-trip latency matrix of specs/regions.yaml from representative points.

rtt_ms = round(overhead_ms + 2 * great_circle_km * route_factor / fibre_km_per_ms); the diagonal uses
intra_region_km. Parameters live in the `derivation` block of regions.yaml.

Usage: python specs/tools/regions_latency.py [--write | --check] [PATH]
  (no flag) print the matrix; --write replace the `latency_ms` block; --check exit 1 if it is stale.
"""

from __future__ import annotations

import math
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "regions.yaml"
MARKER = "latency_ms:"


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float, radius_km: float) -> float:
    """Haversine great-circle distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * radius_km * math.asin(math.sqrt(h))


def rtt_ms(distance_km: float, derivation: dict[str, Any]) -> int:
    """Round-trip time in whole ms for a fibre path of the given straight-line distance."""
    raw = derivation["overhead_ms"] + 2 * distance_km * derivation["route_factor"] / derivation["fibre_km_per_ms"]
    return int(Decimal(repr(raw)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def compute_matrix(data: dict[str, Any]) -> dict[str, list[int]]:
    """Latency rows keyed by region code, columns in the order of data['regions']."""
    derivation = data["derivation"]
    regions = data["regions"]
    rows: dict[str, list[int]] = {}
    for a in regions:
        row = []
        for b in regions:
            if a["code"] == b["code"]:
                distance = float(derivation["intra_region_km"])
            else:
                distance = great_circle_km(a["lat"], a["lon"], b["lat"], b["lon"], derivation["earth_radius_km"])
            row.append(rtt_ms(distance, derivation))
        rows[a["code"]] = row
    return rows


def render(rows: dict[str, list[int]]) -> str:
    """The latency_ms block as YAML text (one flow-style row per region)."""
    width = max(len(code) for code in rows)
    lines = [MARKER]
    for code, row in rows.items():
        cells = ", ".join(f"{v:>2}" for v in row)
        lines.append(f"  {code + ':':<{width + 1}} [{cells}]")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Entry point: print, write or check the matrix."""
    flags = [a for a in argv if a.startswith("--")]
    paths = [a for a in argv if not a.startswith("--")]
    path = Path(paths[0]) if paths else DEFAULT_PATH
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    block = render(compute_matrix(data))
    head, sep, _ = text.rpartition("\n" + MARKER)
    if not sep:
        print(f"{path}: no {MARKER} block at the end", file=sys.stderr)
        return 2
    new_text = head + "\n" + block
    if "--write" in flags:
        path.write_text(new_text, encoding="utf-8")
        return 0
    if "--check" in flags:
        if new_text != text:
            print(f"{path}: latency_ms is stale; run {Path(__file__).name} --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
