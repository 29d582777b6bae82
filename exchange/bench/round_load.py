"""`hetex bench round-under-load`: one clearing round on a busy exchange vs the same round idle.

The bench seeds one market (providers, pools and offers; buyers and open orders) into a temporary SQLite
file (or, with a PostgreSQL server URL, a temporary database) and copies it twice. Each copy is served by
the real app in its own process (as `hetex bench api`).
On the first copy an operator triggers a round with no other traffic (the idle round). On the second,
`clients` workers each submit a signed order every `client_interval` seconds (0: back to back) and
providers amend their offers at `amend_rate` per second (ask changes and window extensions: amendments
that never reduce capacity) while the operator triggers the same round. Both rounds clear the same
snapshot: the orders submitted under load start a day later, outside the round's horizon.

Reported, from one run in one process: the round's wall time under load and idle and their ratio; order
submission p50/p99 while the round ran; the fraction of the round's allocations that became contracts
(allocations surviving commit); and the amendment rate actually achieved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from exchange.bench.api import _free_port, _percentile, _server, _wait_ready
from exchange.client import HetexClient, RemoteError
from federation.keys import SigningKey

MODELS = {"CN-SH": "NV-H100-SXM", "CN-GD": "NV-H100-SXM", "CN-GZ": "HW-910B3", "CN-NM": "HW-910B3"}
LOAD_ORDER = {
    "quantity_devices": 1,
    "models": ["NV-H100-SXM"],
    "regions": ["CN-SH"],
    "duration_seconds": 3600,
    "limit_fen_per_device_hour": {"NV-H100-SXM": 1500},
}
DAY = 86_400
SETTLE_SECONDS = 8.0  # after the server answers, before any traffic: its start-up work (solver warm-up) ends


@dataclass(frozen=True)
class Keys:
    """Private keys of the seeded participants and the offers each provider may amend."""

    operator: SigningKey
    buyers: list[SigningKey]
    providers: list[tuple[SigningKey, list[str]]]


def _rounds_in_worker(pg_url: str | None) -> bool:
    """Whether the bench servers (the same HETEX_* environment) run rounds in a worker process."""
    from exchange.settings import Settings

    return Settings.from_env(database_url=pg_url or "sqlite:///bench.db").rounds_in_child


async def seed_market(url: str, key_dir: Path, *, orders: int, pools: int, seed: int) -> Keys:
    """Write the market (directly through the storage layer: seeding is not what is measured)."""
    from exchange.composition import build_services
    from exchange.settings import Settings
    from exchange.storage.base import now_s
    from exchange.storage.migrate import upgrade_engine
    from exchange.storage.orders import Order
    from exchange.storage.registration import Offer, Pool, Site
    from identifiers.ids import new_id_str

    rng = random.Random(seed)
    svc = await build_services(Settings(database_url=url, key_dir=key_dir))
    assert svc.engine is not None
    await upgrade_engine(svc.engine)
    now = now_s()
    try:
        operator = SigningKey.generate()
        await svc.participants.add_by_operator("operator", "bench operator", operator.public.to_base64())
        providers: list[tuple[SigningKey, list[str]]] = []
        provider_ids: list[str] = []
        regions = sorted(MODELS)
        for p in range(max(1, pools // 10)):
            key = SigningKey.generate()
            who = await svc.participants.add_by_operator("provider", f"bench provider {p}", key.public.to_base64())
            providers.append((key, []))
            provider_ids.append(who.id)
        async with svc.sessions.begin() as session:
            await svc.identity.init(session, exist_ok=True)
            for i in range(pools):
                _key, offer_ids = providers[i % len(providers)]
                who_id = provider_ids[i % len(providers)]
                region = regions[i % len(regions)]
                site = Site(
                    id=new_id_str(),
                    cri=f"CRI1:HX:{region}:BENCH:S{i}",
                    provider_id=who_id,
                    region=region,
                    site_code=f"S{i}",
                    name=f"bench site {i}",
                    status="active",
                    last_heartbeat_at=now,
                )
                devices = rng.choice([16, 32, 64])
                pool = Pool(
                    id=new_id_str(),
                    cri=f"CRI1:HX:{region}:BENCH:S{i}:P{i}:{MODELS[region]}",
                    site_id=site.id,
                    model=MODELS[region],
                    devices=devices,
                    memory_gb=80 if MODELS[region].startswith("NV") else 64,
                    nodes=devices // 8,
                    devices_per_node=8,
                    status="active",
                )
                offer = Offer(
                    id=new_id_str(),
                    pool_id=pool.id,
                    provider_id=who_id,
                    devices=devices,
                    window_start=now - 60,
                    window_end=now + 2 * DAY,
                    min_lease_seconds=0,
                    ask_fen=rng.randint(800, 1600),
                    billing_modes=["per_minute"],
                    status="open",
                    version=1,
                    updated_at=now,
                )
                session.add(site)
                await session.flush()
                session.add(pool)
                await session.flush()
                session.add(offer)
                offer_ids.append(offer.id)
        buyers = [SigningKey.generate() for _ in range(10)]
        buyer_ids = [
            (await svc.participants.add_by_operator("buyer", f"bench buyer {i}", k.public.to_base64(), "CN-SH")).id
            for i, k in enumerate(buyers)
        ]
        async with svc.sessions.begin() as session:
            for i in range(orders):
                qty = rng.choice([1, 1, 1, 1, 2, 4, 8])
                limits = {"NV-H100-SXM": rng.randint(1200, 4000), "HW-910B3": rng.randint(900, 3000)}
                spec = {
                    "quantity_devices": qty,
                    "models": sorted(limits),
                    "regions": rng.choice([regions, regions[:2], regions[2:]]),
                    "duration_seconds": rng.choice([3600, 7200, 14400]),
                    "limit_fen_per_device_hour": limits,
                    "all_or_nothing": True,
                    "same_model": False,
                    "colocation": "any",
                    "billing_mode": "per_minute",
                }
                session.add(
                    Order(
                        id=new_id_str(),
                        buyer_id=buyer_ids[i % len(buyer_ids)],
                        idempotency_key=f"seed-{i}",
                        request_hash=f"{i:064d}",
                        spec=spec,
                        billing_mode="per_minute",
                        status="open",
                        quantity_devices=qty,
                        filled_devices=0,
                        created_at=now - orders + i,
                        updated_at=now,
                    )
                )
        return Keys(operator=operator, buyers=buyers, providers=providers)
    finally:
        await svc.close()


async def _trigger(base: str, operator: SigningKey, session: aiohttp.ClientSession) -> tuple[float, dict[str, Any]]:
    """POST /v1/rounds as the operator; (wall seconds, the round record)."""
    client = HetexClient(base, operator, session=session, timeout=600)
    t0 = time.perf_counter()
    record: dict[str, Any] = await client.request("POST", "/v1/rounds")
    return time.perf_counter() - t0, record


def _round_figures(wall: float, record: dict[str, Any]) -> dict[str, Any]:
    made, dropped = int(record["contracts"]), int(record["dropped_allocations"])
    allocations = made + dropped
    return {
        "wall_seconds": round(wall, 3),
        "status": record["status"],
        "orders": record["orders"],
        "offers": record["offers"],
        "allocations": allocations,
        "contracts": made,
        "dropped_allocations": dropped,
        "surviving_fraction": round(made / allocations, 4) if allocations else None,
        "solve_seconds": (record.get("stats") or {}).get("solve_seconds"),
        "phases": (record.get("stats") or {}).get("round_phases"),
    }


async def idle_round(url: str, keys: Keys, *, warmup: float) -> dict[str, Any]:
    """Serve `url` and run the round with no other traffic (after the same settling time as under load)."""
    port = _free_port()
    with _server("app", port, url) as proc:
        base = f"http://127.0.0.1:{port}"
        await _wait_ready(base + "/healthz", proc)
        await asyncio.sleep(SETTLE_SECONDS + warmup)
        async with aiohttp.ClientSession() as session:
            wall, record = await _trigger(base, keys.operator, session)
    return _round_figures(wall, record)


async def loaded_round(
    url: str, keys: Keys, *, clients: int, client_interval: float, amend_rate: float, warmup: float
) -> dict[str, Any]:
    """Serve `url`, start the load, run the round under it, and measure the orders sent meanwhile."""
    port = _free_port()
    latencies: list[tuple[float, float]] = []  # (start, seconds) of each order submission
    errors = 0
    amended = amend_errors = 0
    stop = asyncio.Event()
    run = os.urandom(4).hex()
    with _server("app", port, url) as proc:
        base = f"http://127.0.0.1:{port}"
        await _wait_ready(base + "/healthz", proc)
        await asyncio.sleep(SETTLE_SECONDS)
        connector = aiohttp.TCPConnector(limit=clients + 16)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
            start_later = int(time.time()) + DAY
            buyers = [HetexClient(base, k, session=session, timeout=600) for k in keys.buyers]

            async def submitter(w: int) -> None:
                nonlocal errors
                buyer = buyers[w % len(buyers)]
                n = 0
                await asyncio.sleep(client_interval * w / clients)  # spread the clients over one interval
                while not stop.is_set():
                    n += 1
                    t0 = time.perf_counter()
                    try:
                        await buyer.submit_order({**LOAD_ORDER, "start_earliest": start_later}, f"load-{run}-{w}-{n}")
                    except (RemoteError, aiohttp.ClientError, TimeoutError):
                        errors += 1
                    took = time.perf_counter() - t0
                    latencies.append((t0, took))
                    if client_interval > took:
                        await asyncio.sleep(client_interval - took)

            providers = [(HetexClient(base, k, session=session, timeout=600), ids) for k, ids in keys.providers]
            targets = [(c, oid) for c, ids in providers for oid in ids]

            async def amender() -> None:
                nonlocal amended, amend_errors
                rng = random.Random(1)
                pending: set[asyncio.Task[None]] = set()
                k = 0

                async def one(client: HetexClient, offer_id: str, body: dict[str, Any]) -> None:
                    nonlocal amended, amend_errors
                    try:
                        await client.request("PATCH", f"/v1/offers/{offer_id}", body)
                        amended += 1
                    except (RemoteError, aiohttp.ClientError, TimeoutError):
                        amend_errors += 1

                while not stop.is_set():
                    client, offer_id = targets[k % len(targets)]
                    k += 1
                    if k % 2:  # an ask change
                        body: dict[str, Any] = {"ask_fen": rng.randint(800, 1600)}
                    else:  # a window extension
                        body = {"window_end": int(time.time()) + 3 * DAY + k}
                    task = asyncio.create_task(one(client, offer_id, body))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    await asyncio.sleep(1 / amend_rate)
                await asyncio.gather(*pending)

            load = [asyncio.create_task(submitter(w)) for w in range(clients)]
            amend_task = asyncio.create_task(amender())
            await asyncio.sleep(warmup)
            amended_before = amended
            r0 = time.perf_counter()
            wall, record = await _trigger(base, keys.operator, session)
            r1 = time.perf_counter()
            amended_during = amended - amended_before
            stop.set()
            await asyncio.gather(*load, amend_task)
    during = sorted(s for t0, s in latencies if r0 <= t0 <= r1)
    before = sorted(s for t0, s in latencies if t0 < r0)
    figures = _round_figures(wall, record)
    figures.update(
        {
            "orders_submitted_during_round": len(during),
            "order_errors": errors,
            "order_p50_ms": round(_percentile(during, 0.50) * 1000, 1),
            "order_p99_ms": round(_percentile(during, 0.99) * 1000, 1),
            "orders_before_round": len(before),
            "order_p50_ms_before_round": round(_percentile(before, 0.50) * 1000, 1),
            "order_p99_ms_before_round": round(_percentile(before, 0.99) * 1000, 1),
            "amendments_during_round": amended_during,
            "amendments_per_second": round(amended_during / (r1 - r0), 2) if r1 > r0 else None,
            "amendment_errors": amend_errors,
        }
    )
    return figures


async def run_round_load_bench(
    *,
    clients: int = 100,
    client_interval: float = 1.0,
    amend_rate: float = 20.0,
    orders: int = 3000,
    pools: int = 60,
    seed: int = 1,
    warmup: float = 5.0,
    pg_url: str | None = None,
) -> dict[str, Any]:
    """Seed one market, clear it idle and under load (each on its own copy); return the figures.
    SQLite temporary files by default; with `pg_url` (a PostgreSQL server URL whose user may create
    databases) three temporary databases there (seed, and two copies made with CREATE DATABASE ... TEMPLATE)."""
    with tempfile.TemporaryDirectory(prefix="hetex-bench-round-") as tmp:
        root = Path(tmp)
        async with _databases(root, pg_url) as (seed_url, copy):
            keys = await seed_market(seed_url, root / "keys", orders=orders, pools=pools, seed=seed)
            os.environ["HETEX_KEY_DIR"] = str(root / "keys")  # the bench servers sign with the seeded exchange key
            idle = await idle_round(await copy("idle"), keys, warmup=warmup)
            busy = await loaded_round(
                await copy("load"),
                keys,
                clients=clients,
                client_interval=client_interval,
                amend_rate=amend_rate,
                warmup=warmup,
            )
    return {
        "benchmark": "round-under-load",
        "clients": clients,
        "client_interval_seconds": client_interval,
        "amend_rate_target_per_second": amend_rate,
        "seeded_orders": orders,
        "seeded_pools": pools,
        "seed": seed,
        "database": "sqlite (temporary file, WAL)" if pg_url is None else "postgresql (temporary databases)",
        # where the servers ran the round (HETEX_ROUND_PROCESS, exchange/services/round_worker.py)
        "rounds_in_worker_process": _rounds_in_worker(pg_url),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "idle": idle,
        "under_load": busy,
        "round_time_ratio": round(busy["wall_seconds"] / idle["wall_seconds"], 3) if idle["wall_seconds"] else None,
    }


@contextlib.asynccontextmanager
async def _databases(root: Path, pg_url: str | None) -> AsyncIterator[tuple[str, Callable[[str], Awaitable[str]]]]:
    """(URL of the database to seed, make_copy(name) -> URL of a copy of it); everything dropped after."""
    if pg_url is None:
        seeded = root / "seed.db"

        async def copy_file(name: str) -> str:
            target = root / f"{name}.db"
            shutil.copyfile(seeded, target)
            return f"sqlite+aiosqlite:///{target}"

        yield f"sqlite+aiosqlite:///{seeded}", copy_file
        return
    import asyncpg

    admin = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    base = admin.rpartition("/")[0]
    prefix = f"hetex_bench_{os.urandom(4).hex()}"
    made: list[str] = []

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def copy_db(name: str) -> str:
        await sql(f'CREATE DATABASE "{prefix}_{name}" TEMPLATE "{prefix}_seed"')
        made.append(f"{prefix}_{name}")
        return f"{base}/{prefix}_{name}".replace("postgresql://", "postgresql+asyncpg://")

    await sql(f'CREATE DATABASE "{prefix}_seed"')
    made.append(f"{prefix}_seed")
    try:
        yield f"{base}/{prefix}_seed".replace("postgresql://", "postgresql+asyncpg://"), copy_db
    finally:
        for name in made:
            await sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def format_result(r: dict[str, Any]) -> str:
    """Human summary."""
    i, b = r["idle"], r["under_load"]
    return "\n".join(
        [
            f"bench round-under-load: {r['seeded_orders']} orders, {r['seeded_pools']} pools, {r['clients']} clients "
            f"(one order each per {r['client_interval_seconds']} s), "
            f"amendments {r['amend_rate_target_per_second']}/s target, {r['cpu_count']} CPUs, {r['database']}, "
            f"rounds {'in a worker process' if r['rounds_in_worker_process'] else 'in the server process'}",
            f"  idle round        : {i['wall_seconds']} s  ({i['allocations']} allocations, "
            f"{i['contracts']} contracts, {i['dropped_allocations']} dropped)",
            f"  round under load  : {b['wall_seconds']} s  ({b['allocations']} allocations, "
            f"{b['contracts']} contracts, {b['dropped_allocations']} dropped)",
            f"  ratio load/idle   : {r['round_time_ratio']}",
            f"  orders during round: {b['orders_submitted_during_round']}  p50 {b['order_p50_ms']} ms  "
            f"p99 {b['order_p99_ms']} ms  ({b['order_errors']} errors; before the round: "
            f"{b['orders_before_round']}, p50 {b['order_p50_ms_before_round']} ms, "
            f"p99 {b['order_p99_ms_before_round']} ms)",
            f"  round phases idle : {i['phases']}",
            f"  round phases load : {b['phases']}",
            f"  allocations surviving commit: {b['surviving_fraction']}",
            f"  amendments during round: {b['amendments_during_round']} ({b['amendments_per_second']}/s, "
            f"{b['amendment_errors']} refused)",
        ]
    )


def to_json(r: dict[str, Any]) -> str:
    """Machine output."""
    return json.dumps(r, indent=2)
