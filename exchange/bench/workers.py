"""`hetex bench workers`: signed order submissions per second through `hetex serve --workers N` on
PostgreSQL, for each N asked (default 1 and 2), measured in one run; the ratio is the scaling figure.

Each N gets a fresh database on the server (dropped after) and a real `hetex serve --workers N` process
(its access log to a file, as in production). The load generator in this process runs `concurrency`
requests at a time over keep-alive connections, each a signed order (its own nonce, Content-Digest,
Ed25519, Idempotency-Key) from one of several buyers. The client shares the machine's cores with the
servers: on a 2-core machine it takes a share of the CPU the second worker would use, so the ratio is a
lower bound of what two workers give behind a separate load balancer. To keep that share small the
orders are signed before the measured run (`presign`; `--sign-live` signs each as it is sent, which costs
the client about as much CPU as verifying costs the server). The load average is reported with
the figures (a shared machine skews them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from exchange.bench.api import ORDER, Rate, _cpu_seconds, measure
from exchange.bench.ladder import DEFAULT_PG, bench_database
from exchange.client import HetexClient, dumps
from federation.keys import SigningKey

BUYERS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live descendants."""
    return sum(_cpu_seconds(p) or 0.0 for p in _tree(pid))


@contextlib.contextmanager
def _serve(database_url: str, workers: int, port: int, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETEX_")}
    env.update(
        {
            "HETEX_DATABASE_URL": database_url,
            "HETEX_KEY_DIR": str(tmp / "keys"),
            "HETEX_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "4096",
            "HETEX_ROUND_INTERVAL_SECONDS": "0",
        }
    )
    cmd = [sys.executable, "-m", "exchange", "serve", "--dev", "--port", str(port), "--workers", str(workers)]
    with logged_process(cmd, tmp / f"serve-{workers}.log", cwd=tmp, env=env) as proc:
        yield proc


@contextlib.contextmanager
def logged_process(
    cmd: list[str], log_path: Path, cwd: Path | str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A bench server process whose output goes to `log_path` (a pipe nobody reads would fill and stall it on
    its next log line); terminated, then killed after 30 s, on exit."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


async def _ready(base: str, proc: subprocess.Popen[bytes], workers: int, within: float = 90) -> None:
    """Until /healthz answers and all `workers` processes are up."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"hetex serve --workers {workers} exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(base + "/healthz") as r:
                    if r.status == 200 and (workers == 1 or len(_tree(proc.pid)) > workers):
                        return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"hetex serve --workers {workers} did not start")


#: orders signed ahead per second of run (warm-up included): above what 2 workers take on 2 cores, so the pool
#: lasts; past it the client signs on the fly (counted in `signed_live`)
PRESIGN_PER_SECOND = 1200


def presign(buyers: list[HetexClient], count: int, run: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """`count` signed order submissions (URL, body, headers), each with its own nonce and Idempotency-Key,
    spread over the buyers; valid for the signature window (300 s)."""
    body = dumps(ORDER)
    out = []
    for i in range(count):
        buyer = buyers[i % len(buyers)]
        url = buyer.url("/v1/orders")
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"w-{run}-{i}"}
        headers.update(buyer.sign("POST", url, body))
        out.append((url, body, headers))
    return out


async def _load(base: str, seconds: float, concurrency: int, presigned: bool = True) -> tuple[Rate, int]:
    """The measured run: pre-signed requests (the client then costs the server's share of the CPU only for
    sending), or signed as sent; the rate and how many were signed during the run."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        buyers = [HetexClient(base, SigningKey.generate(), session=session) for _ in range(BUYERS)]
        for i, buyer in enumerate(buyers):
            await buyer.register("buyer", f"bench buyer {i}", "CN-SH")
        run = os.urandom(4).hex()
        ready = presign(buyers, int(PRESIGN_PER_SECOND * (seconds + 1.0)), run) if presigned else []
        live = 0

        async def send(i: int) -> bool:
            nonlocal live
            try:
                if i <= len(ready):
                    url, body, headers = ready[i - 1]
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        return resp.status == 201
                live += 1
                result = await buyers[i % BUYERS].submit_order(ORDER, f"w-{run}-live-{i}")
            except Exception:
                return False
            return bool(result.get("id"))

        return await measure(seconds, concurrency, send, warmup=1.0), live


async def run_workers_bench(
    seconds: float, concurrency: int, counts: list[int], pg_url: str = DEFAULT_PG, presigned: bool = True
) -> dict[str, Any]:
    """Measure each worker count on its own fresh PostgreSQL database; figures and ratios to the first."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="hetex-bench-workers-") as tmp_name:
        tmp = Path(tmp_name)
        for n in counts:
            async with bench_database("postgresql", tmp, pg_url) as url:
                port = _free_port()
                base = f"http://127.0.0.1:{port}"
                with _serve(url, n, port, tmp) as proc:
                    await _ready(base, proc, n)
                    before = _tree_cpu(proc.pid)
                    each = {p: _cpu_seconds(p) or 0.0 for p in _tree(proc.pid)}
                    rate, live = await _load(base, seconds, concurrency, presigned)
                    used = _tree_cpu(proc.pid) - before
                    spent = sorted(((_cpu_seconds(p) or 0.0) - c for p, c in each.items()), reverse=True)
                    if rate.requests:
                        rate.server_cpu_ms_per_request = round(used * 1000 / rate.requests, 3)
                # how evenly the kernel spread the connections: CPU seconds of the busiest processes
                runs.append(
                    {
                        "workers": n,
                        **asdict(rate),
                        "busiest_process_cpu_s": [round(x, 2) for x in spent[:n]],
                        "signed_live": live,
                    }
                )
    base_rate = runs[0]["per_second"] or 1.0
    for r in runs:
        r["ratio"] = round(r["per_second"] / base_rate, 2)
    return {
        "bench": "workers",
        "database": "postgresql",
        "seconds": seconds,
        "concurrency": concurrency,
        "cpus": os.cpu_count(),
        "client": "presigned" if presigned else "signs each request as it sends it",
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
    }


def format_result(result: dict[str, Any]) -> str:
    """Human-readable table."""
    lines = [
        f"hetex bench workers: signed orders on PostgreSQL, {result['concurrency']} concurrent, "
        f"{result['seconds']} s per run, {result['cpus']} CPUs, load average {result['loadavg_before']}",
        f"{'workers':>8} {'orders/s':>10} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
        f" {'srv CPU ms/req':>15}",
    ]
    for r in result["runs"]:
        cpu = r["server_cpu_ms_per_request"]
        lines.append(
            f"{r['workers']:>8} {r['per_second']:>10} {r['ratio']:>6} {r['p50_ms']:>8} {r['p99_ms']:>8} "
            f"{r['errors']:>7} {'' if cpu is None else cpu:>15}"
        )
    return "\n".join(lines)


def to_json(result: dict[str, Any]) -> str:
    """One JSON document."""
    return json.dumps(result, indent=2)
