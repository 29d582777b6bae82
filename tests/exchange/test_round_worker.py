"""`hetex serve` runs whole clearing rounds in a child process (exchange/services/round_worker.py), on
SQLite (`round_process=on`) and PostgreSQL (the default there): a round triggered over HTTP completes in the
worker and its contracts are the same kind as in-process ones; a domain error raised in the worker reaches
the caller whole; `kill -9` of the server takes the worker with it (no orphan keeps the round lock) and
the next round marks the dead one abandoned and clears."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from exchange.client import HetexClient
from exchange.services.round_lock import RoundBusyError
from exchange.services.round_worker import ROUND_WORKER_NICE
from exchange.services.rounds import DELAY_HOOK_ENV, KILL_HOOK_ENV
from exchange.settings import Settings
from identifiers.errors import ValidationError
from tests.exchange.test_rounds_processes import ROOT, assert_never_oversold, finish, populate, state
from tests.exchange.test_serve_shutdown import (
    add_operator,
    free_port,
    next_round_clears_after_abandoned,
    round_running,
    up,
    wait_for,
)

pytestmark = pytest.mark.slow


def children(pid: int) -> set[int]:
    """Pids whose parent is `pid` (from /proc)."""
    out: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.add(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone(pids: set[int], within: float) -> bool:
    """True once none of `pids` is alive (polled for at most `within` seconds)."""
    deadline = time.monotonic() + within
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def serve(url: str, keys: Path, port: int, *, delay: float | None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HETEX_ROUND_PROCESS": "on"}  # the default, stated
    env.pop(KILL_HOOK_ENV, None)
    env.pop(DELAY_HOOK_ENV, None)
    if delay is not None:
        env[DELAY_HOOK_ENV] = str(delay)
    cmd = [sys.executable, "-m", "exchange", "serve", "--database-url", url, "--port", str(port)]
    cmd += ["--key-dir", str(keys), "--dev"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_settings_choose_the_worker() -> None:
    assert Settings(database_url="postgresql://u@h/db").rounds_in_child
    assert Settings(database_url="sqlite:////tmp/x.db").rounds_in_child
    assert not Settings(database_url="postgresql://u@h/db", round_process="off").rounds_in_child
    for memory in ("sqlite+aiosqlite://", "sqlite:///:memory:", "sqlite+aiosqlite:///file:x?mode=memory&uri=true"):
        assert not Settings(database_url=memory).rounds_in_child, memory  # another process cannot open it


def test_domain_errors_cross_the_process_boundary_whole() -> None:
    err = pickle.loads(pickle.dumps(ValidationError("too many", field="body.quantity", limit=3)))
    assert type(err) is ValidationError and err.to_dict() == {
        "code": "invalid_input",
        "message": "too many",
        "field": "body.quantity",
        "limit": 3,
    }
    busy = pickle.loads(pickle.dumps(RoundBusyError("another round")))
    assert type(busy) is RoundBusyError and busy.code == "round_in_progress" and str(busy) == "another round"


async def test_round_over_http_runs_in_the_worker(fresh_db_factory: Callable[[], str], tmp_path: Path) -> None:
    url, keys = fresh_db_factory(), tmp_path / "keys"
    await populate(url, keys)
    operator = await add_operator(url, keys)
    port = free_port()
    proc = serve(url, keys, port, delay=None)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for(lambda: up(session, proc, base))
            client = HetexClient(base, operator, session=session, timeout=120)
            first = await client.request("POST", "/v1/rounds")
            second = await client.request("POST", "/v1/rounds")  # the same worker serves the next round
            workers = children(proc.pid)
            server_nice = os.getpriority(os.PRIO_PROCESS, proc.pid)
            child_nice = {os.getpriority(os.PRIO_PROCESS, p) for p in workers if alive(p)}
        proc.send_signal(signal.SIGTERM)
        code, _out, err = await finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err[-3000:]
    assert first["status"] == "completed" and first["contracts"], first
    assert second["status"] == "completed"
    assert workers, "the server has a round worker child"
    assert server_nice + ROUND_WORKER_NICE in child_nice, (server_nice, child_nice)  # rounds yield to requests
    assert "round worker process" in err and "[round worker]" in err  # the round logged from the worker
    st = await state(url)
    assert [r.status for r in st["rounds"]] == ["completed", "completed"]
    assert len(st["contracts"]) == first["contracts"] + second["contracts"] == st["log_size"]
    assert_never_oversold(st)
    assert not any(alive(p) for p in workers)  # shut down with the server


async def test_kill_9_of_the_server_takes_its_round_worker_along(
    fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url, keys = fresh_db_factory(), tmp_path / "keys"
    await populate(url, keys)
    operator = await add_operator(url, keys)
    port = free_port()
    proc = serve(url, keys, port, delay=300)  # the round waits in the worker after its snapshot
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            trigger = await round_running(session, proc, base, operator, url)
            workers = children(proc.pid)
            assert workers
            proc.kill()
            proc.wait(10)
            got = (await asyncio.gather(trigger, return_exceptions=True))[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert isinstance(got, BaseException)  # the trigger's connection died with the server
    assert await asyncio.to_thread(gone, workers, 10), "the round worker outlived its server"
    # no orphan holds the round lock: the next round runs at once, marks the dead one abandoned and clears
    await next_round_clears_after_abandoned(url, keys)


async def test_shutdown_leaves_another_process_running_round_alone(
    fresh_db_factory: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed worker's round was maybe still waiting for the lock that another process holds for its own
    round: the shutdown's mark must not touch that round's `running` row (it takes the round lock first)."""
    from exchange.composition import build_services
    from exchange.services import rounds as rounds_module
    from exchange.storage.rounds import Round
    from identifiers.ids import new_id_str

    monkeypatch.setattr(rounds_module, "ABANDON_LOCK_WAIT_SECONDS", 0.3)
    url = fresh_db_factory()
    other = await build_services(Settings(database_url=url, key_dir=tmp_path / "keys"))
    ours = await build_services(Settings(database_url=url, key_dir=tmp_path / "keys"))
    try:
        async with other.rounds.lock.hold(5):  # the other process's round is running
            async with other.sessions.begin() as s:
                s.add(Round(id=new_id_str(), started_at=1, status="running", trigger="interval", market_now=1,
                            method="mcf", orders_count=0, offers_count=0))  # fmt: skip
            await ours.rounds._mark_running_abandoned("the exchange shut down during the round")
            async with ours.sessions() as s:
                assert [r.status for r in (await s.scalars(select(Round))).all()] == ["running"]
        await ours.rounds._mark_running_abandoned("the exchange shut down during the round")  # lock free now
        async with ours.sessions() as s:
            assert [r.status for r in (await s.scalars(select(Round))).all()] == ["abandoned"]
    finally:
        await other.close()
        await ours.close()
