"""`hetex serve` stops gracefully on SIGTERM (a real subprocess, SQLite and PostgreSQL): with a round
running, it stops accepting, lets the round finish within the grace period or abandons it (never left
`running`, the round lock released), drains requests, closes the pool and exits 0; the database stays
consistent and the next round clears."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exchange.client import HetexClient
from exchange.composition import build_services
from exchange.services.rounds import DELAY_HOOK_ENV, KILL_HOOK_ENV
from exchange.settings import Settings
from federation.keys import SigningKey
from tests.exchange.test_rounds_processes import ROOT, assert_never_oversold, finish, populate, round_process, state

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def add_operator(url: str, keys: Path) -> SigningKey:
    key = SigningKey.generate()
    svc = await build_services(Settings(database_url=url, key_dir=keys))
    try:
        await svc.participants.add_by_operator("operator", "Operator", key.public.to_base64())
    finally:
        await svc.close()
    return key


def serve(url: str, keys: Path, port: int, *, delay: float, grace: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), DELAY_HOOK_ENV: str(delay)}
    env.pop(KILL_HOOK_ENV, None)
    cmd = [sys.executable, "-m", "exchange", "serve", "--database-url", url, "--port", str(port)]
    cmd += ["--key-dir", str(keys), "--shutdown-grace", str(grace), "--dev"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def wait_for(check: Callable[[], Any], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def up(session: aiohttp.ClientSession, proc: subprocess.Popen[str], base: str) -> bool:
    """True once the server answers /healthz (asserting it has not exited)."""
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    try:
        async with session.get(base + "/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def next_round_clears_after_abandoned(url: str, keys: Path) -> None:
    """A `hetex round run` after an abandoned round: it completes, makes contracts with their log records,
    and oversells nothing."""
    rc, _out, rerr = await finish(round_process(url, keys))
    assert rc == 0, rerr[-2000:]
    st = await state(url)
    assert [r.status for r in st["rounds"]] == ["abandoned", "completed"]
    assert len(st["contracts"]) > 0 and st["log_size"] == len(st["contracts"])
    assert_never_oversold(st)


async def round_running(
    session: aiohttp.ClientSession, proc: subprocess.Popen[str], base: str, operator: SigningKey, url: str
) -> asyncio.Task[Any]:
    """Once the server is up: trigger a round as the operator and wait until its row is `running`; the
    trigger's task (its answer comes when the round ends)."""
    await wait_for(lambda: up(session, proc, base))
    client = HetexClient(base, operator, session=session, timeout=120)
    trigger = asyncio.create_task(client.request("POST", "/v1/rounds"))

    async def running() -> bool:
        return any(r.status == "running" for r in (await state(url))["rounds"])

    await wait_for(running)
    return trigger


async def sigterm_mid_round(url: str, keys: Path, *, delay: float, grace: float) -> tuple[int, str, Any]:
    """Serve, trigger a round, SIGTERM while it runs; (exit code, log, what the trigger got)."""
    operator = await add_operator(url, keys)
    port = free_port()
    proc = serve(url, keys, port, delay=delay, grace=grace)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            trigger = await round_running(session, proc, base, operator, url)
            proc.send_signal(signal.SIGTERM)
            got: Any = (await asyncio.gather(trigger, return_exceptions=True))[0]
            code, _out, err = await finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, err, got


async def test_sigterm_lets_a_short_round_finish(fresh_db_factory: Callable[[], str], tmp_path: Path) -> None:
    url, keys = fresh_db_factory(), tmp_path / "keys"
    await populate(url, keys)
    code, err, got = await sigterm_mid_round(url, keys, delay=1.0, grace=30)
    assert code == 0, err[-3000:]
    assert isinstance(got, dict) and got["status"] == "completed", got  # the in-flight request was drained
    st = await state(url)
    assert [r.status for r in st["rounds"]] == ["completed"]
    assert len(st["contracts"]) > 0 and st["log_size"] == len(st["contracts"])
    assert_never_oversold(st)
    assert "the running clearing round finished" in err and "database pool closed" in err


async def test_sigterm_abandons_a_long_round_and_the_next_round_clears(
    fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url, keys = fresh_db_factory(), tmp_path / "keys"
    await populate(url, keys)
    started = time.monotonic()
    code, err, got = await sigterm_mid_round(url, keys, delay=300, grace=1)
    assert code == 0, err[-3000:]
    assert time.monotonic() - started < 120  # bounded: did not wait for the 300 s round
    assert not isinstance(got, dict)  # the trigger got no round: the request was cut when the round was abandoned
    st = await state(url)
    assert [(r.status, r.error) for r in st["rounds"]] == [("abandoned", "the exchange shut down during the round")]
    assert st["contracts"] == [] and st["log_size"] == 0
    assert all(o.status == "open" and o.filled_devices == 0 for o in st["orders"])
    assert "was abandoned" in err and "database pool closed" in err
    # a new round runs afterwards
    await next_round_clears_after_abandoned(url, keys)
