"""`hetex bench fleet`: a fleet of provider sites reporting in, buyers ordering, and periodic rounds.

Seeding (not measured) writes `sites` providers straight into a fresh database, each with its own Ed25519
key, one site, one pool, one open offer and one confirmed contract (so it has something to meter). Then the
real app serves that database in its own process (as `hetex bench api`) and this process drives it over HTTP:

- every site sends a signed heartbeat (POST /v1/sites/{cri}/heartbeat) every `interval` seconds, the sites
  spread evenly over the interval, and every `usage_interval` seconds one signed batched usage report
  (POST /v1/usage/batch) carrying one node-signed envelope per meter (`meters` per site);
- buyers submit signed orders at `order_rate` per second;
- the operator triggers a clearing round (POST /v1/rounds) every `round_interval` seconds.

The load is open-loop: each request is sent at its scheduled time whether or not earlier ones finished
(up to `max_in_flight` outstanding; beyond that the schedule slips and the slip is reported). Reported: the
sustained request rate (completed per second of the measured window) by kind against the target, p50/p99
latency by kind, errors, the server's CPU per request (Linux /proc), and whether the rounds kept their period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from exchange.bench.api import _free_port, _percentile, _wait_ready
from exchange.bench.ladder import DEFAULT_PG, bench_database
from exchange.bench.round_load import SETTLE_SECONDS
from exchange.bench.workers import _ready as workers_ready
from exchange.bench.workers import _serve as serve_workers
from exchange.bench.workers import _tree_cpu as tree_cpu
from exchange.bench.workers import logged_process
from exchange.client import HetexClient, RemoteError, remote_error
from federation.httpsig import sign_request
from federation.keys import SigningKey

REGIONS = {"CN-SH": "NV-H100-SXM", "CN-GZ": "HW-910B3", "CN-NM": "HW-910B3", "CN-GD": "NV-H100-SXM"}
DEVICES_PER_SITE = 8
CONTRACT_DAYS = 30
ORDER = {
    "quantity_devices": 1,
    "models": ["NV-H100-SXM", "HW-910B3"],
    "regions": ["CN-SH", "CN-GZ", "CN-NM", "CN-GD"],
    "duration_seconds": 3600,
    "limit_fen_per_device_hour": {"NV-H100-SXM": 3000, "HW-910B3": 2000},
    "all_or_nothing": False,
}


@dataclass(frozen=True)
class Site:
    """One simulated site: its provider key, site CRI and the contract its meters report on."""

    key: SigningKey
    cri: str
    contract_id: str
    contract_start: int


@dataclass
class Fleet:
    """Everything the load generator needs from the seeded database."""

    operator: SigningKey
    buyers: list[SigningKey]
    sites: list[Site]


@dataclass
class Kind:
    """Latencies and errors of one request kind in the measured window."""

    target_per_second: float
    latencies: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)  # perf_counter at each request's start (slow_seconds)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def record(self, seconds: float, ok: bool, error: str = "", started: float = 0.0) -> None:
        """Count one finished request."""
        self.latencies.append(seconds)
        self.started.append(started)
        if not ok:
            self.errors += 1
            if len(self.error_samples) < 3:
                self.error_samples.append(error[:200])

    def figures(self, window: float) -> dict[str, Any]:
        """Rate and latency figures for the window."""
        ordered = sorted(self.latencies)
        return {
            "target_per_second": round(self.target_per_second, 2),
            "completed": len(ordered),
            "per_second": round(len(ordered) / window, 2) if window else 0.0,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "p50_ms": round(_percentile(ordered, 0.50) * 1000, 1),
            "p99_ms": round(_percentile(ordered, 0.99) * 1000, 1),
        }


async def seed_fleet(url: str, key_dir: Path, sites: int, *, seed: int = 1) -> Fleet:
    """Write operator, buyers and `sites` providers (site, pool, offer, confirmed contract each) directly
    through the services and storage layer, in chunks (seeding is not what is measured)."""
    from sqlalchemy import update

    from exchange.composition import build_services
    from exchange.settings import Settings
    from exchange.storage.base import now_s
    from exchange.storage.contracts import Contract
    from exchange.storage.migrate import upgrade_engine
    from exchange.storage.orders import Order
    from exchange.storage.registration import Offer, Pool
    from exchange.storage.registration import Site as SiteRow
    from identifiers.cri import mint_pool_cri, mint_site_cri
    from identifiers.ids import new_id_str

    rng = random.Random(seed)
    svc = await build_services(Settings(database_url=url, key_dir=key_dir))
    assert svc.engine is not None
    await upgrade_engine(svc.engine)
    now = now_s()
    start = now - 3600
    regions = sorted(REGIONS)
    try:
        await svc.identity.init(exist_ok=True)
        operator = SigningKey.generate()
        await svc.participants.add_by_operator("operator", "fleet operator", operator.public.to_base64())
        buyers = [SigningKey.generate() for _ in range(20)]
        buyer_ids = [
            (await svc.participants.add_by_operator("buyer", f"fleet buyer {i}", k.public.to_base64(), "CN-SH")).id
            for i, k in enumerate(buyers)
        ]
        made: list[Site] = []
        chunk = 500
        for first in range(0, sites, chunk):
            keys = [SigningKey.generate() for _ in range(first, min(sites, first + chunk))]
            principals = [
                await svc.participants.add_by_operator("provider", f"fleet site {first + j}", k.public.to_base64())
                for j, k in enumerate(keys)
            ]
            provider_ids = [p.id for p in principals]
            operator_codes = [str(p.operator_code) for p in principals]
            async with svc.sessions.begin() as session:
                rows: list[tuple[SigningKey, str, str, str]] = []
                staged: list[tuple[Any, Any, Any, Any]] = []
                for j, (key, provider_id) in enumerate(zip(keys, provider_ids, strict=True)):
                    i = first + j
                    region = regions[i % len(regions)]
                    model = REGIONS[region]
                    site_cri = mint_site_cri(svc.registration.authority, region, operator_codes[j], rng=rng)
                    code = site_cri.site
                    site = SiteRow(
                        id=new_id_str(),
                        cri=str(site_cri),
                        provider_id=provider_id,
                        region=region,
                        site_code=code,
                        name=f"fleet site {i}",
                        status="active",
                        last_heartbeat_at=now,
                    )
                    pool = Pool(
                        id=new_id_str(),
                        cri=str(mint_pool_cri(site_cri, model, rng=rng)),
                        site_id=site.id,
                        model=model,
                        devices=2 * DEVICES_PER_SITE,
                        memory_gb=80 if model.startswith("NV") else 64,
                        nodes=2,
                        devices_per_node=DEVICES_PER_SITE,
                        status="active",
                    )
                    offer = Offer(
                        id=new_id_str(),
                        pool_id=pool.id,
                        provider_id=provider_id,
                        devices=DEVICES_PER_SITE,
                        window_start=now - 60,
                        window_end=now + 2 * 86_400,
                        min_lease_seconds=0,
                        ask_fen=rng.randint(800, 1600),
                        billing_modes=["per_minute"],
                        status="open",
                        version=1,
                        updated_at=now,
                    )
                    order = Order(
                        id=new_id_str(),
                        buyer_id=buyer_ids[i % len(buyer_ids)],
                        idempotency_key=f"fleet-seed-{i}",
                        request_hash=f"{i:064d}",
                        spec={**ORDER, "quantity_devices": DEVICES_PER_SITE, "regions": [region]},
                        billing_mode="per_minute",
                        status="filled",
                        quantity_devices=DEVICES_PER_SITE,
                        filled_devices=DEVICES_PER_SITE,
                        created_at=start,
                        updated_at=start,
                    )
                    staged.append((site, pool, offer, order))
                    rows.append((key, site.cri, pool.id, order.id))
                for layer in range(4):  # sites, then pools, then offers and orders (foreign keys)
                    session.add_all([objs[layer] for objs in staged])
                    await session.flush()
                for (key, cri, pool_id, order_id), provider_id, j in zip(
                    rows, provider_ids, range(len(rows)), strict=True
                ):
                    contract = await svc.contracts.create_from_match(
                        session,
                        order_id=order_id,
                        pool_id=pool_id,
                        buyer_id=buyer_ids[(first + j) % len(buyer_ids)],
                        provider_id=provider_id,
                        devices=DEVICES_PER_SITE,
                        start_at=start,
                        end_at=start + CONTRACT_DAYS * 86_400,
                        buyer_price_fen=3000,
                        provider_price_fen=2500,
                        billing_mode="per_minute",
                    )
                    made.append(Site(key, cri, contract.id, start))
                # the contracts are written as Core rows (no unit of work): confirm them with one UPDATE
                ids = [site.contract_id for site in made[-len(rows) :]]
                await session.execute(update(Contract).where(Contract.id.in_(ids)).values(confirmed_at=start))
        return Fleet(operator, buyers, made)
    finally:
        await svc.close()


def usage_envelopes(site: Site, seq: int, period_start: int, period_end: int, meters: int) -> list[dict[str, Any]]:
    """One node-signed usage envelope per meter of `site` for the period (full use of its share)."""
    from exchange.cli.usage import build_usage_envelope

    share = DEVICES_PER_SITE // meters or 1
    minutes = share * (period_end - period_start) // 60
    return [
        build_usage_envelope(
            site.key,
            _keyid(site.key),
            contract_id=site.contract_id,
            meter_id=f"m{m}",
            seq=seq,
            period_start=period_start,
            period_end=period_end,
            device_minutes=minutes,
            availability_bps=10_000,
        )
        for m in range(meters)
    ]


def _keyid(key: SigningKey) -> str:
    from exchange.keyid import participant_key_id

    return participant_key_id(key.public)


@contextlib.asynccontextmanager
async def _in_flight(limit: int) -> AsyncIterator[Callable[[Callable[[], Coroutine[Any, Any, None]]], bool]]:
    """start(make) runs make() as a task, or returns False when `limit` requests are already outstanding
    (the caller counts a slip)."""
    tasks: set[asyncio.Task[None]] = set()

    def start(make: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        if len(tasks) >= limit:
            return False
        task = asyncio.ensure_future(make())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return True

    try:
        yield start
    finally:
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        for task in list(tasks):  # still unanswered 30 s after the window: counted as not completed
            task.cancel()


async def drive(
    base: str,
    fleet: Fleet,
    *,
    duration: float,
    interval: float,
    usage_interval: float,
    meters: int,
    order_rate: float,
    round_interval: float,
    max_in_flight: int,
    server_pid: int,
    presign: bool = True,
    warmup: float = 0.0,
) -> dict[str, Any]:
    """Run the schedule for `duration` seconds against `base`; return the figures. `presign`: every heartbeat is
    signed before the measured window with `created` = its scheduled send time (what a site signing at that
    moment would send: a heartbeat is nonce-free and its content is only that time), so the load generator's
    CPU in the window goes to sending; usage batches and orders are always signed as they are sent. `warmup` > 0:
    first every site sends one heartbeat, spread over that many seconds and not measured, so the window sees a
    server in its steady state (its key cache holding the sites' keys), not its first minute."""
    n = len(fleet.sites)
    kinds = {
        "heartbeat": Kind(n / interval),
        "usage_batch": Kind(n / usage_interval),
        "order": Kind(order_rate),
    }
    rounds: list[dict[str, Any]] = []
    round_tasks: list[asyncio.Task[None]] = []
    slipped = 0
    connector = aiohttp.TCPConnector(limit=max_in_flight)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        clients = [HetexClient(base, s.key, session=session) for s in fleet.sites]
        buyers = [HetexClient(base, k, session=session) for k in fleet.buyers]
        operator = HetexClient(base, fleet.operator, session=session, timeout=max(60.0, 2 * round_interval))
        seqs = [0] * n
        run = os.urandom(3).hex()

        async def timed(kind: str, call: Awaitable[Any]) -> None:
            t0 = time.perf_counter()
            try:
                result = await call
                ok = not (kind == "usage_batch" and result.get("refused"))
                error = "" if ok else str(result["results"][0].get("error"))
            except (RemoteError, aiohttp.ClientError, TimeoutError) as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"
            kinds[kind].record(time.perf_counter() - t0, ok, error, t0)

        async def heartbeat(i: int) -> None:
            await timed("heartbeat", clients[i].heartbeat(fleet.sites[i].cri))

        async def presigned(i: int, headers: dict[str, str]) -> dict[str, Any]:
            status, raw = await clients[i].send("POST", beat_urls[i], b"", headers)
            data = json.loads(raw) if raw else {}
            if status >= 400:
                raise remote_error(status, data if isinstance(data, dict) else {"detail": str(data)})
            return dict(data)

        async def heartbeat_signed(i: int, headers: dict[str, str]) -> None:
            await timed("heartbeat", presigned(i, headers))

        beat_urls = [clients[i].url(f"/v1/sites/{site.cri}/heartbeat") for i, site in enumerate(fleet.sites)]

        async def order(i: int) -> None:
            await timed("order", buyers[i % len(buyers)].submit_order(ORDER, f"fleet-{run}-{i}"))

        async def usage(i: int) -> None:
            now = int(time.time())
            site = fleet.sites[i]
            seqs[i] += 1
            end = now - now % 60
            begin = max(site.contract_start, end - int(usage_interval))
            if seqs[i] > 1:
                begin = max(begin, last_end[i])
            if end <= begin:
                seqs[i] -= 1
                return
            last_end[i] = end
            envelopes = usage_envelopes(site, seqs[i], begin, end, meters)
            await timed("usage_batch", clients[i].report_usage_batch(envelopes))

        last_end = [0] * n

        async def run_round(k: int, due: float) -> None:
            t0 = time.perf_counter()
            try:
                record = await operator.request("POST", "/v1/rounds")
                status, contracts = record.get("status"), record.get("contracts")
            except (RemoteError, aiohttp.ClientError, TimeoutError) as exc:
                status, contracts = f"error: {exc}"[:200], None
            rounds.append(
                {
                    "round": k,
                    "at_s": round(t0 - t_start, 1),  # into the measured window
                    "started_late_s": round(t0 - due, 3),
                    "wall_s": round(time.perf_counter() - t0, 3),
                    "status": status,
                    "contracts": contracts,
                }
            )

        # one merged schedule: (due offset, kind, index)
        events: list[tuple[float, str, int]] = []
        t = 0.0
        while t < duration:
            for i in range(n):
                offset = t + interval * i / n
                if offset < duration:
                    events.append((offset, "heartbeat", i))
            t += interval
        t = 0.0
        while t < duration:
            for i in range(n):
                offset = t + usage_interval * ((i * 7919) % n) / n
                if offset < duration:
                    events.append((offset, "usage_batch", i))
            t += usage_interval
        if order_rate > 0:
            events += [(k / order_rate, "order", k) for k in range(int(duration * order_rate))]
        if round_interval > 0:
            events += [(k * round_interval, "round", k) for k in range(1, int(duration // round_interval) + 1)]
        warm_errors = 0
        if warmup > 0:
            gate = asyncio.Semaphore(max_in_flight)

            async def warm(i: int) -> None:
                nonlocal warm_errors
                try:
                    await clients[i].heartbeat(fleet.sites[i].cri)
                except (RemoteError, aiohttp.ClientError, TimeoutError):
                    warm_errors += 1
                finally:
                    gate.release()

            t_warm = time.perf_counter()
            warming: list[asyncio.Future[None]] = []
            for i in range(n):
                delay = t_warm + warmup * i / n - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()
                warming.append(asyncio.ensure_future(warm(i)))
            await asyncio.gather(*warming)
        signed_beats: dict[int, dict[str, str]] = {}
        beats = sum(1 for _o, kind, _i in events if kind == "heartbeat")
        start_epoch = time.time() + 1.0 + (beats * 0.0005 if presign else 0.0)  # room to sign them all first
        if presign:
            for k, (offset, kind, i) in enumerate(events):
                if kind == "heartbeat":
                    c = clients[i]
                    signed_beats[k] = sign_request(
                        "POST", beat_urls[i], {}, b"", c.key, c.keyid, created=int(start_epoch + offset)
                    )
        await asyncio.sleep(max(0.0, start_epoch - time.time()))
        async with _in_flight(max_in_flight) as start:
            t_start = time.perf_counter()
            cpu0 = tree_cpu(server_pid)
            client0 = time.process_time()
            order_of = sorted(range(len(events)), key=lambda k: events[k])
            for k in order_of:
                offset, kind, i = events[k]
                delay = t_start + offset - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if kind == "round":
                    round_tasks.append(asyncio.create_task(run_round(i, t_start + offset)))
                    continue
                if kind == "heartbeat":
                    make = partial(heartbeat_signed, i, signed_beats[k]) if k in signed_beats else partial(heartbeat, i)
                elif kind == "usage_batch":
                    make = partial(usage, i)
                else:
                    make = partial(order, i)
                if not start(make):
                    slipped += 1
            lag = time.perf_counter() - (t_start + duration)
        window = time.perf_counter() - t_start
        cpu1 = tree_cpu(server_pid)
        client_cpu = time.process_time() - client0
        await asyncio.gather(*round_tasks)  # a round still running
    completed = sum(len(k.latencies) for k in kinds.values())
    all_latencies = sorted(x for k in kinds.values() for x in k.latencies)
    kept = all(r["status"] == "completed" and r["wall_s"] < round_interval for r in rounds) if rounds else None
    return {
        "window_seconds": round(window, 2),
        "schedule_lag_seconds": round(max(0.0, lag), 2),
        "requests_completed": completed,
        "per_second": round(completed / window, 1),
        "target_per_second": round(sum(k.target_per_second for k in kinds.values()), 1),
        "p50_ms": round(_percentile(all_latencies, 0.50) * 1000, 1),
        "p99_ms": round(_percentile(all_latencies, 0.99) * 1000, 1),
        "slipped_over_in_flight_limit": slipped,
        "warmup_seconds": warmup,
        "warmup_errors": warm_errors,
        "server_cpu_ms_per_request": (
            round((cpu1 - cpu0) * 1000 / completed, 3) if cpu0 is not None and cpu1 is not None and completed else None
        ),
        "server_cpu_utilisation": (round((cpu1 - cpu0) / window, 3) if cpu0 is not None and cpu1 is not None else None),
        # the load generator's own CPU (signing every request): near one core means the client, not the server,
        # bounds the offered rate
        "client_cpu_ms_per_request": round(client_cpu * 1000 / completed, 3) if completed else None,
        "client_cpu_utilisation": round(client_cpu / window, 3),
        "kinds": {name: k.figures(window) for name, k in kinds.items()},
        "rounds": rounds,
        "rounds_kept_period": kept,
        "slow_seconds": _slow_seconds(kinds.values(), t_start),
    }


#: a request slower than this counts in slow_seconds
SLOW_SECONDS = 0.1


def _slow_seconds(kinds: Iterable[Kind], t_start: float, top: int = 10) -> list[list[int]]:
    """Where the tail is: [second of the window, requests started in it that took > SLOW_SECONDS], the `top`
    seconds with the most, in time order (compare with the rounds' at_s)."""
    slow = Counter(
        int(t0 - t_start) for k in kinds for lat, t0 in zip(k.latencies, k.started, strict=True) if lat > SLOW_SECONDS
    )
    return sorted([second, count] for second, count in slow.most_common(top))


async def run_fleet(
    *,
    sites: int,
    interval: float,
    duration: float,
    usage_interval: float = 300.0,
    meters: int = 4,
    order_rate: float = 2.0,
    round_interval: float = 60.0,
    max_in_flight: int = 512,
    workers: int = 0,
    db: str = "sqlite",
    pg_url: str = DEFAULT_PG,
    progress: Callable[[str], None] = lambda _m: None,
    presign: bool = True,
    warmup: float | None = None,
) -> dict[str, Any]:
    """Seed a fleet into a fresh database, serve it, drive it for `duration` seconds; return the figures.
    `workers` 0 serves it with the bench app server (as `hetex bench api`), N >= 1 with `hetex serve --workers N`
    (its CPU summed over the process tree)."""
    with tempfile.TemporaryDirectory(prefix="hetex-fleet-") as tmp:
        root = Path(tmp)
        async with bench_database(db, root, pg_url) as url:
            t0 = time.perf_counter()
            progress(f"seeding {sites} sites ...")
            fleet = await seed_fleet(url, root / "keys", sites)
            seeded = time.perf_counter() - t0
            progress(f"seeded in {seeded:.1f} s; serving and driving for {duration:.0f} s ...")
            os.environ["HETEX_KEY_DIR"] = str(root / "keys")  # the server signs with the seeded exchange key
            port = _free_port()
            server = _app_server(port, url, root) if workers == 0 else serve_workers(url, workers, port, root)
            with server as proc:
                base = f"http://127.0.0.1:{port}"
                if workers == 0:
                    await _wait_ready(base + "/healthz", proc, within=120)
                else:
                    await workers_ready(base, proc, workers, within=120)
                await asyncio.sleep(SETTLE_SECONDS)  # the server's start-up work (solver warm-up) is not measured
                figures = await drive(
                    base,
                    fleet,
                    duration=duration,
                    interval=interval,
                    usage_interval=usage_interval,
                    meters=meters,
                    order_rate=order_rate,
                    round_interval=round_interval,
                    max_in_flight=max_in_flight,
                    server_pid=proc.pid,
                    presign=presign,
                    warmup=min(interval, 60.0) if warmup is None else warmup,
                )
            figures["server_log_errors"] = _log_errors(root)
    return {
        "benchmark": "fleet",
        "database": db,
        "sites": sites,
        "interval_seconds": interval,
        "usage_interval_seconds": usage_interval,
        "meters_per_site": meters,
        "order_rate": order_rate,
        "round_interval_seconds": round_interval,
        "duration_seconds": duration,
        "seed_seconds": round(seeded, 1),
        "server_processes": max(1, workers),
        "server": "bench app server" if workers == 0 else f"hetex serve --workers {workers}",
        "heartbeats_presigned": presign,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **figures,
    }


@contextlib.contextmanager
def _app_server(port: int, url: str, root: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The bench app server (as `hetex bench api`), its output in root/serve-app.log."""
    cmd = [sys.executable, "-m", "exchange.bench.api", "--serve", "app", "--port", str(port), "--database-url", url]
    with logged_process(cmd, root / "serve-app.log", cwd=os.getcwd()) as proc:
        yield proc


def _log_errors(root: Path) -> list[str]:
    """The first few error lines of the server logs in `root` (a healthy run has none)."""
    lines: list[str] = []
    for path in sorted(root.glob("serve*.log")):
        with contextlib.suppress(OSError):
            lines += [ln for ln in path.read_text(errors="replace").splitlines() if "Error" in ln or "error" in ln]
    return lines[:5]


def format_fleet(r: dict[str, Any]) -> str:
    """Human summary of run_fleet's figures."""
    lines = [
        f"bench fleet: {r['sites']} sites, heartbeat every {r['interval_seconds']} s, usage batch "
        f"({r['meters_per_site']} meters) every {r['usage_interval_seconds']} s, {r['order_rate']} orders/s, "
        f"round every {r['round_interval_seconds']} s; {r['duration_seconds']} s on {r['database']}, "
        f"{r['server']}, {r['cpu_count']} CPUs, load {r['load_average']}; heartbeats "
        f"{'pre-signed' if r.get('heartbeats_presigned') else 'signed live'}, warm-up {r.get('warmup_seconds')} s",
        f"  sustained {r['per_second']} req/s (target {r['target_per_second']})  p50 {r['p50_ms']} ms  "
        f"p99 {r['p99_ms']} ms  server CPU {r['server_cpu_ms_per_request']} ms/req "
        f"(utilisation {r['server_cpu_utilisation']})  client CPU {r['client_cpu_ms_per_request']} ms/req "
        f"(utilisation {r['client_cpu_utilisation']})  schedule lag {r['schedule_lag_seconds']} s",
    ]
    for name, k in r["kinds"].items():
        lines.append(
            f"  {name:<12} {k['per_second']:>8} /s (target {k['target_per_second']})  p50 {k['p50_ms']} ms  "
            f"p99 {k['p99_ms']} ms  errors {k['errors']}"
        )
    for rd in r["rounds"]:
        lines.append(
            f"  round {rd['round']}: {rd['status']}, {rd['wall_s']} s, started {rd['started_late_s']} s late, "
            f"{rd['contracts']} contracts"
        )
    lines.append(f"  rounds kept their period: {r['rounds_kept_period']}")
    for line in r.get("server_log_errors") or []:
        lines.append(f"  server log: {line[:200]}")
    return "\n".join(lines)
