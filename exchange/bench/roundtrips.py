"""PostgreSQL round trips of one signed heartbeat and one 4-meter usage batch, end to end through the real app.

`python -m exchange.bench.roundtrips [--pg-url URL]`: seeds three fleet sites (exchange.bench.fleet) into a fresh
database, serves the app in this process (aiohttp test server), warms it up (keys cached, statements prepared on
the connection), then counts the socket writes to the PostgreSQL server during each request: asyncpg sends each
round trip's messages in one write, so writes = round trips. Prints one JSON line per kind (several repetitions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from asyncio import selector_events
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from exchange.bench.ladder import DEFAULT_PG


@contextmanager
def counting_writes(port: int) -> Iterator[list[int]]:
    """Count socket writes to `port` (one cell, reset by the caller) while the block runs."""
    counter = [0]
    transport_class: Any = getattr(selector_events, "_SelectorSocketTransport")  # noqa: B009 (private, untyped)
    original = transport_class.write

    def write(self: Any, data: Any) -> None:
        peer = self.get_extra_info("peername")
        if peer and peer[1] == port and not _background():
            counter[0] += 1
        original(self, data)

    transport_class.write = write
    try:
        yield counter
    finally:
        transport_class.write = original


def _background() -> bool:
    """The write comes from the duties lease or a duty (exchange.services.lease names their tasks), not a request."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return False
    name = task.get_name() if task is not None else ""
    return name == "hetex-lease" or name.startswith("hetex-duty-")


async def measure(pg_url: str, repetitions: int = 5) -> dict[str, list[int]]:
    """Round trips per request by kind, `repetitions` each, on a fresh database of the server at `pg_url`."""
    from aiohttp.test_utils import TestClient, TestServer

    from exchange.api.app import create_app
    from exchange.bench.fleet import seed_fleet, usage_envelopes
    from exchange.bench.ladder import bench_database
    from exchange.bench.quiet import quiet_settings
    from exchange.client import HetexClient
    from exchange.composition import build_services
    from exchange.storage import engine as engine_module

    out: dict[str, list[int]] = {"heartbeat": [], "usage_batch_4_meters": []}
    with tempfile.TemporaryDirectory() as tmp:
        async with bench_database("postgresql", Path(tmp), pg_url) as url:
            fleet = await seed_fleet(url, Path(tmp) / "keys", 1)
            # no background duty writes during the count (checkpoints, federation loops; lease renewed once a minute)
            svc = await build_services(quiet_settings(url, Path(tmp) / "keys", lease_poll_seconds=60))
            client = TestClient(TestServer(create_app(svc)))
            await client.start_server()
            ping_after = engine_module.PING_AFTER_IDLE_SECONDS
            try:
                base = str(client.make_url("")).rstrip("/")
                svc.settings.public_base_url = base
                site = fleet.sites[0]
                c = HetexClient(base, site.key, session=client.session)

                async def batch(seq: int) -> dict[str, Any]:
                    start = site.contract_start + (seq - 1) * 60
                    result: dict[str, Any] = await c.report_usage_batch(
                        usage_envelopes(site, seq, start, start + 60, 4)
                    )
                    return result

                for seq in range(1, 4):  # warm-up: key cached, statements prepared on the pooled connections
                    await c.heartbeat(site.cri)
                    await asyncio.sleep(1.05)  # a heartbeat moves liveness by whole seconds
                    await batch(seq)
                # the request's own statements: a connection idle > PING_AFTER_IDLE_SECONDS is pinged first, a cost of
                # idleness (a loaded machine stretches the gaps between these requests), not of the request
                engine_module.PING_AFTER_IDLE_SECONDS = 3600.0
                with counting_writes(int(_port(url))) as counter:
                    for rep in range(repetitions):
                        await asyncio.sleep(1.05)
                        counter[0] = 0
                        await c.heartbeat(site.cri)
                        out["heartbeat"].append(counter[0])
                        counter[0] = 0
                        result = await batch(4 + rep)
                        assert result["accepted"] == 4, result
                        out["usage_batch_4_meters"].append(counter[0])
            finally:
                engine_module.PING_AFTER_IDLE_SECONDS = ping_after
                await client.close()
                await svc.close()
    return out


def _port(url: str) -> str:
    host = url.split("@", 1)[1].split("/", 1)[0]
    return host.rsplit(":", 1)[1] if ":" in host else "5432"


def main() -> None:
    """CLI entry: print the counts as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="PostgreSQL server admin URL")
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.pg_url, args.repetitions))))


if __name__ == "__main__":
    main()
