"""Input boundary benchmark: `load_json` (parse + depth/character/integer checks) vs plain `json.loads` of the
same bytes, in one process, as ratios; and what an unauthenticated request costs the real app (in-process test
server on a temporary SQLite database): a 1 MiB body vs a 2-byte body, unsigned and with junk signature
headers, each refused 401. Run: `python -m exchange.bench.boundary`."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
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


#: signature headers of the right names and a plausible shape, signed by no one
JUNK_SIGNATURE = {
    "Content-Digest": "sha-512=:" + "A" * 86 + "==:",
    "Signature-Input": 'sig1=("@method" "@target-uri" "content-digest");created=1;keyid="0123456789abcdef";'
    'alg="ed25519";nonce="bm9uY2U"',
    "Signature": "sig1=:" + "A" * 86 + "==:",
}


async def unauthenticated_costs(repeat: int = 30) -> dict[str, dict[str, float]]:
    """Median milliseconds of a refused (401) POST /v1/orders through the real app, per (headers, body size)."""
    from pathlib import Path

    from aiohttp.test_utils import TestClient, TestServer

    from exchange.api.app import create_app
    from exchange.composition import build_services
    from exchange.settings import Settings
    from exchange.storage.migrate import upgrade_engine

    big = bodies()["1 MiB body"]
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hetex-bench-boundary-") as tmp:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{tmp}/b.db", key_dir=Path(tmp) / "keys", public_base_url="http://x"
        )
        svc = await build_services(settings)
        assert svc.engine is not None
        await upgrade_engine(svc.engine)
        await svc.identity.init(exist_ok=True)
        try:
            async with TestClient(TestServer(create_app(svc))) as client:
                for label, headers in (("unsigned", {}), ("junk signature", JUNK_SIGNATURE)):
                    out[label] = {}
                    for size, body in (("2 B", b"{}"), ("1 MiB", big)):
                        took = []
                        for _ in range(repeat):
                            t0 = time.perf_counter()
                            resp = await client.post(
                                "/v1/orders", data=body, headers={"Content-Type": "application/json", **headers}
                            )
                            await resp.read()
                            took.append(time.perf_counter() - t0)
                            assert resp.status == 401, resp.status
                        out[label][size] = round(statistics.median(took) * 1000, 2)
        finally:
            await svc.close()
    return out


def main() -> int:
    """Print per-body timings and the ratio load_json / json.loads, then the unauthenticated request costs."""
    for label, raw in bodies().items():
        number = 20_000 if len(raw) < 10_000 else 20
        base = best(partial(json.loads, raw), number)
        ours = best(partial(load_json, raw), number)
        print(f"{label} ({len(raw)} B): json.loads {base * 1e6:.1f} us, load_json {ours * 1e6:.1f} us, "
              f"ratio {ours / base:.2f}")  # fmt: skip
    for label, by_size in asyncio.run(unauthenticated_costs()).items():
        small, large = by_size["2 B"], by_size["1 MiB"]
        print(f"refused POST /v1/orders, {label}: 2 B body {small} ms, 1 MiB body {large} ms, "
              f"ratio {large / small:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
