"""Input boundary benchmark: `load_json` (parse + depth/character/integer checks) vs plain `json.loads` of the
same bytes, in one process, as ratios. Run: `python -m exchange.bench.boundary`."""

from __future__ import annotations

import json
import sys
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

from exchange.api.boundary import MAX_BODY_BYTES, load_json


def bodies() -> dict[str, bytes]:
    """A typical order body and a clean body just under the 1 MiB cap (many small objects)."""
    order = {
        "quantity_devices": 8,
        "models": ["NV-H100-SXM"],
        "regions": ["CN-SH"],
        "duration_seconds": 7200,
        "start_earliest": 1_800_000_000,
        "start_latest": 1_800_003_600,
        "limit_fen_per_device_hour": {"NV-H100-SXM": 3000},
    }
    items: list[dict[str, Any]] = []
    big = b""
    while True:
        items.extend({"name": f"node-{i}", "n": i, "tags": ["a", "b"]} for i in range(len(items), len(items) + 1000))
        candidate = json.dumps({"items": items}).encode()
        if len(candidate) > MAX_BODY_BYTES:
            break
        big = candidate
    return {"order body": json.dumps(order).encode(), "1 MiB body": big}


def best(fn: Callable[[], Any], number: int) -> float:
    """Best mean seconds per call over 5 repeats."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def main() -> int:
    """Print per-body timings and the ratio load_json / json.loads."""
    for label, raw in bodies().items():
        number = 20_000 if len(raw) < 10_000 else 20
        base = best(partial(json.loads, raw), number)
        ours = best(partial(load_json, raw), number)
        print(f"{label} ({len(raw)} B): json.loads {base * 1e6:.1f} us, load_json {ours * 1e6:.1f} us, "
              f"ratio {ours / base:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
