"""`hetex bench api`: signed order submissions per second over the real HTTP stack, next to a bare
aiohttp JSON endpoint measured in the same run.

Both servers run in their own process on a loopback port (the real app on a temporary SQLite database,
migrated; the bare app a one-handler aiohttp application), without access logs. The load generator in
this process runs `concurrency` workers on one aiohttp session; every app request is signed afresh (new
nonce, Content-Digest, Ed25519) and carries a new Idempotency-Key, so each one stores an order.

Developer knobs (environment of the run): HETEX_SWITCH_INTERVAL sets sys.setswitchinterval in both
servers; HETEX_BENCH_PROFILE=<file> runs the app server under cProfile and writes its stats there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from exchange.client import HetexClient, dumps
from federation.keys import SigningKey

ORDER = {
    "quantity_devices": 8,
    "models": ["NV-H100-SXM", "HW-910B3"],
    "regions": ["CN-SH", "CN-GZ"],
    "duration_seconds": 7200,
    "limit_fen_per_device_hour": {"NV-H100-SXM": 3000, "HW-910B3": 2000},
}


@dataclass
class Rate:
    """Throughput and latency of one endpoint under load (and the server's CPU per request, on Linux)."""

    requests: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_request: float | None = None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measured(pid: int, bench: Awaitable[Rate]) -> Rate:
    before = _cpu_seconds(pid)
    rate = await bench
    after = _cpu_seconds(pid)
    if before is not None and after is not None and rate.requests:
        # includes the warm-up requests' share; both endpoints are measured the same way
        rate.server_cpu_ms_per_request = round((after - before) * 1000 / rate.requests, 3)
    return rate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def measure(
    seconds: float, concurrency: int, send: Callable[[int], Awaitable[bool]], warmup: float = 0.5
) -> Rate:
    """Run `concurrency` workers calling send(i) for `seconds` after a warm-up; count and time them."""
    counter = 0
    latencies: list[float] = []
    errors = 0

    async def worker(deadline: float, record: bool) -> None:
        nonlocal counter, errors
        while time.perf_counter() < deadline:
            counter += 1
            start = time.perf_counter()
            ok = await send(counter)
            if record:
                latencies.append(time.perf_counter() - start)
                errors += 0 if ok else 1

    async def run_for(duration: float, record: bool) -> None:
        deadline = time.perf_counter() + duration
        await asyncio.gather(*(worker(deadline, record) for _ in range(concurrency)))

    await run_for(warmup, False)
    started = time.perf_counter()
    await run_for(seconds, True)
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return Rate(
        requests=len(latencies),
        errors=errors,
        seconds=round(elapsed, 3),
        per_second=round(len(latencies) / elapsed, 1),
        p50_ms=round(_percentile(ordered, 0.50) * 1000, 2),
        p99_ms=round(_percentile(ordered, 0.99) * 1000, 2),
    )


@contextlib.contextmanager
def _server(kind: str, port: int, database_url: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "exchange.bench.api", "--serve", kind, "--port", str(port)]
    if database_url:
        cmd += ["--database-url", database_url]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=os.getcwd())
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], within: float = 120) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"bench server exited: {err[-2000:]}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"bench server at {url} did not start")


async def _bench_bare(base: str, seconds: float, concurrency: int) -> Rate:
    body = dumps(ORDER)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(_i: int) -> bool:
            async with session.post(base + "/echo", data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
                return r.status == 200

        return await measure(seconds, concurrency, send)


async def _bench_app(base: str, seconds: float, concurrency: int) -> Rate:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        provider = HetexClient(base, SigningKey.generate(), session=session)
        await provider.register("provider", "bench provider")
        for region, model in (("CN-SH", "NV-H100-SXM"), ("CN-GZ", "HW-910B3")):
            site = await provider.add_site(region, f"bench {region}")
            pool = await provider.add_pool(site["cri"], model, 64, nodes=8, devices_per_node=8)
            await provider.post_offer(pool["cri"], 64, 1800, int(time.time()) - 60)
        buyer = HetexClient(base, SigningKey.generate(), session=session)
        await buyer.register("buyer", "bench buyer", "CN-SH")
        run = os.urandom(4).hex()

        async def send(i: int) -> bool:
            result = await buyer.submit_order(ORDER, f"bench-{run}-{i}")
            return bool(result.get("id"))

        return await measure(seconds, concurrency, send)


async def run_bench(seconds: float, concurrency: int, database_url: str | None = None) -> dict[str, Any]:
    """Start both servers, measure the bare endpoint then signed order submission; return the figures.
    The app uses a temporary SQLite file unless `database_url` names another (migrated on start)."""
    with tempfile.TemporaryDirectory(prefix="hetex-bench-") as tmp:
        db_url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        bare_port, app_port = _free_port(), _free_port()
        with _server("bare", bare_port) as bare_proc, _server("app", app_port, db_url) as app_proc:
            bare_base, app_base = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{app_port}"
            await _wait_ready(bare_base + "/healthz", bare_proc)
            await _wait_ready(app_base + "/healthz", app_proc)
            bare = await _measured(bare_proc.pid, _bench_bare(bare_base, seconds, concurrency))
            app = await _measured(app_proc.pid, _bench_app(app_base, seconds, concurrency))
    return {
        "benchmark": "api",
        "seconds": seconds,
        "concurrency": concurrency,
        "database": "sqlite (temporary file, WAL)" if database_url is None else db_url.split("://")[0],
        "bare_aiohttp": asdict(bare),
        "signed_orders": asdict(app),
        "ratio": round(app.per_second / bare.per_second, 3) if bare.per_second else None,
        "cpu_count": os.cpu_count(),
    }


# ------------------------------------------------------------------------------------------- servers


def _bare_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        data = await request.json()
        return web.json_response({"ok": True, "keys": len(data)}, status=200)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/healthz", health)
    return app


async def _real_app(database_url: str, port: int) -> web.Application:
    from exchange.api.app import create_app
    from exchange.composition import build_services
    from exchange.settings import Settings
    from exchange.storage.migrate import upgrade_engine

    # the seeding process's key directory when it passes one (round-under-load), else a scratch one
    key_dir = Path(os.environ.get("HETEX_KEY_DIR") or Path(tempfile.gettempdir()) / "hetex-bench-keys")
    # HETEX_* from the environment apply (e.g. HETEX_ROUND_PROCESS for a before/after run)
    settings = Settings.from_env(database_url=database_url, key_dir=key_dir, public_base_url=f"http://127.0.0.1:{port}")
    svc = await build_services(settings, serving=True)
    assert svc.engine is not None
    await upgrade_engine(svc.engine)
    await svc.identity.start(create_if_empty=True)  # as `hetex serve` does
    app = create_app(svc)

    async def close(_app: web.Application) -> None:
        await svc.close()

    app.on_cleanup.append(close)
    return app


def _serve(kind: str, port: int, database_url: str | None) -> None:
    switch = os.environ.get("HETEX_SWITCH_INTERVAL")
    if switch:
        sys.setswitchinterval(float(switch))
    if kind == "bare":
        web.run_app(_bare_app(), host="127.0.0.1", port=port, access_log=None, print=None)
        return
    assert database_url
    profile_to = os.environ.get("HETEX_BENCH_PROFILE")
    if not profile_to:
        web.run_app(_real_app(database_url, port), host="127.0.0.1", port=port, access_log=None, print=None)
        return
    # Developer aid: profile the app server's main thread with cProfile; stats go to the named file on exit.
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        web.run_app(_real_app(database_url, port), host="127.0.0.1", port=port, access_log=None, print=None)
    finally:
        profiler.disable()
        profiler.dump_stats(profile_to)


def main(argv: list[str] | None = None) -> int:
    """Internal entry: run one of the bench servers (used by run_bench in a child process)."""
    parser = argparse.ArgumentParser(prog="python -m exchange.bench.api")
    parser.add_argument("--serve", choices=["bare", "app"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url")
    args = parser.parse_args(argv)
    _serve(args.serve, args.port, args.database_url)
    return 0


def format_result(result: dict[str, Any]) -> str:
    """Human summary of run_bench's figures."""
    b, a = result["bare_aiohttp"], result["signed_orders"]
    return "\n".join(
        [
            f"bench api: {result['seconds']} s per endpoint, concurrency {result['concurrency']}, "
            f"{result['cpu_count']} CPUs, {result['database']}",
            f"  bare aiohttp JSON POST : {b['per_second']:>8} req/s  p50 {b['p50_ms']} ms  p99 {b['p99_ms']} ms"
            f"  server CPU {b['server_cpu_ms_per_request']} ms/req",
            f"  signed order submit    : {a['per_second']:>8} req/s  p50 {a['p50_ms']} ms  p99 {a['p99_ms']} ms"
            f"  server CPU {a['server_cpu_ms_per_request']} ms/req  ({a['errors']} errors)",
            f"  ratio signed/bare      : {result['ratio']}",
        ]
    )


def to_json(result: dict[str, Any]) -> str:
    """Machine output."""
    return json.dumps(result, indent=2)


if __name__ == "__main__":
    sys.exit(main())
