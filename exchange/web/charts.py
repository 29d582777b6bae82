"""Server-side chart geometry for inline SVG (no I/O, no JavaScript): line charts, heat classes, a region map."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

WIDTH, HEIGHT, PAD = 320, 120, 8
HEAT_LEVELS = 6
#: The box of the served regions (longitude, latitude) that the region map projects.
MAP_LON = (73.0, 135.0)
MAP_LAT = (18.0, 54.0)
MAP_W, MAP_H = 620, 360


@dataclass(frozen=True)
class LineChart:
    """An SVG polyline with its axis labels."""

    points: str
    dots: tuple[tuple[float, float, str], ...]
    lo: Decimal
    hi: Decimal
    first: int
    last: int


def line_chart(series: Sequence[tuple[int, Decimal]]) -> LineChart | None:
    """Scale (time, value) points into the WIDTH x HEIGHT box; None for an empty series."""
    if not series:
        return None
    xs = [t for t, _ in series]
    ys = [v for _, v in series]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    span_x = (x1 - x0) or 1
    span_y = (y1 - y0) or Decimal(1)
    coords = []
    for t, v in series:
        x = PAD + (WIDTH - 2 * PAD) * ((t - x0) / span_x if x1 > x0 else 0.5)
        y = HEIGHT - PAD - float((HEIGHT - 2 * PAD) * ((v - y0) / span_y if y1 > y0 else Decimal("0.5")))
        coords.append((round(x, 1), round(y, 1), str(v)))
    return LineChart(
        points=" ".join(f"{x},{y}" for x, y, _ in coords), dots=tuple(coords), lo=y0, hi=y1, first=x0, last=x1
    )


def heat_level(value: Decimal | None, lo: Decimal, hi: Decimal) -> int:
    """0..HEAT_LEVELS-1 for a value between lo and hi (the CSS class heat-N colours the cell)."""
    if value is None:
        return -1
    if hi <= lo:
        return HEAT_LEVELS // 2
    return min(HEAT_LEVELS - 1, int((value - lo) / (hi - lo) * HEAT_LEVELS))


def map_xy(lon: float, lat: float) -> tuple[float, float]:
    """Equirectangular projection of a point into the MAP_W x MAP_H box."""
    x = (lon - MAP_LON[0]) / (MAP_LON[1] - MAP_LON[0]) * MAP_W
    y = (MAP_LAT[1] - lat) / (MAP_LAT[1] - MAP_LAT[0]) * MAP_H
    return round(x, 1), round(y, 1)


def bubble_radius(devices: int, biggest: int) -> float:
    """Circle radius whose area follows the device count (4 px minimum for a region with capacity)."""
    if devices <= 0 or biggest <= 0:
        return 0.0
    return round(max(4.0, 28.0 * math.sqrt(devices / biggest)), 1)
