"""Several `hetex serve` processes on one PostgreSQL (real subprocesses, each from its own folder, one key
directory, one public URL as behind a load balancer): buyers and round triggers on all of them never
oversell or double-match, idempotency keys and nonces hold across processes, one process at a time runs
the timed duties and every checkpoint verifies against the one exchange key; kill -9 of the duties-lease
holder mid-round moves the lease within seconds and leaves no half-written round. `--workers 2` restarts a
killed worker and drains on SIGTERM; an audit export survives a kill of the whole server. SQLite refuses
`--workers 2`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exchange.audit.verify import verify_bundle
from exchange.client import RemoteConflictError, dumps
from exchange.composition import build_services
from exchange.services.audit import DELAY_HOOK_ENV as EXPORT_DELAY_ENV
from exchange.services.rounds import DELAY_HOOK_ENV as ROUND_DELAY_ENV
from exchange.settings import Settings
from federation.keys import SigningKey, VerifyKey
from federation.note import NoteVerifier, verify_checkpoint
from tests.exchange.test_rounds_processes import assert_never_oversold, populate, state
from tests.exchange.workerkit import PUBLIC, ROOT, Routed, Server, sql, until

pytestmark = pytest.mark.slow
PG_ONLY = pytest.mark.parametrize("backend", ["pg"], indirect=True)

FAST = {
    "HETEX_PUBLIC_BASE_URL": PUBLIC,
    "HETEX_ROUND_INTERVAL_SECONDS": "1",
    "HETEX_CHECKPOINT_INTERVAL_SECONDS": "0.5",
    "HETEX_LEASE_POLL_SECONDS": "0.2",
    "HETEX_JOB_LEASE_SECONDS": "2",
    "HETEX_SHUTDOWN_GRACE_SECONDS": "2",
}


def order_spec(limit: int, qty: int = 2) -> dict[str, Any]:
    """A buyer order the populated pools can fill (all or nothing)."""
    return {
        "quantity_devices": qty,
        "models": ["NV-H100-SXM"],
        "regions": ["CN-SH"],
        "duration_seconds": 3600,
        "limit_fen_per_device_hour": {"NV-H100-SXM": limit},
        "all_or_nothing": True,
        "billing_mode": "per_minute",
    }


async def people(url: str, keys: Path, buyers: int) -> tuple[list[SigningKey], SigningKey, SigningKey]:
    """Buyer keys, the operator's key and a regulator's key, registered directly."""
    svc = await build_services(Settings(database_url=url, key_dir=keys))
    out = [SigningKey.generate() for _ in range(buyers + 2)]
    try:
        for i, key in enumerate(out[:buyers]):
            await svc.participants.add_by_operator("buyer", f"buyer {i}", key.public.to_base64(), "CN-SH")
        await svc.participants.add_by_operator("operator", "operator", out[-2].public.to_base64())
        await svc.participants.add_by_operator("regulator", "regulator", out[-1].public.to_base64())
    finally:
        await svc.close()
    return out[:buyers], out[-2], out[-1]


async def lease_row(url: str) -> tuple[int, int] | None:
    """(epoch, holder pid) of the duties lease, or None before anyone took it."""
    rows = await sql(url, "SELECT epoch, holder FROM leases WHERE name = 'duties'")
    return (int(rows[0][0]), int(rows[0][1].rsplit(":", 1)[1])) if rows else None


async def exchange_verifier(url: str, keys: Path) -> tuple[NoteVerifier, str]:
    """The one exchange key as a note verifier, and the log origin."""
    svc = await build_services(Settings(database_url=url, key_dir=keys))
    try:
        infos = await svc.identity.keys()
    finally:
        await svc.close()
    assert len(infos) == 1, infos
    return NoteVerifier(infos[0].name, VerifyKey.from_base64(infos[0].public_key)), svc.settings.origin


@PG_ONLY
async def test_three_processes_share_one_database(fresh_db_factory: Callable[[], str], tmp_path: Path) -> None:
    url = fresh_db_factory()
    keys = tmp_path / "keys"
    await populate(url, keys, pools=3, orders=0)
    buyers, operator, _regulator = await people(url, keys, buyers=6)
    env = {**FAST, "HETEX_DATABASE_URL": url, "HETEX_KEY_DIR": str(keys), ROUND_DELAY_ENV: "0.7"}
    servers = [Server(tmp_path / name, env) for name in ("a", "b", "c")]
    try:
        for s in servers:
            s.start()
        await asyncio.gather(*(s.ready() for s in servers))

        # buyers on all three at once (more demand than the 24 devices), rounds triggered on all three
        async def buy(i: int, key: SigningKey, server: Server) -> str:
            async with Routed(server.url, key) as c:
                return str((await c.submit_order(order_spec(2000 + 100 * i), f"o-{i}-{server.port}"))["id"])

        async def trigger(server: Server) -> str:
            async with Routed(server.url, operator) as c:
                try:
                    return str((await c.request("POST", "/v1/rounds"))["status"])
                except RemoteConflictError as exc:
                    return exc.code

        placed = await asyncio.gather(
            *(buy(i, k, s) for i, k in enumerate(buyers) for s in servers), *(trigger(s) for s in servers)
        )
        assert len(set(placed[:18])) == 18
        assert set(placed[18:]) <= {"completed", "round_in_progress"}, placed[18:]

        # one idempotency key on all three processes at once: one order
        async def same(server: Server) -> str:
            async with Routed(server.url, buyers[0]) as c:
                return str((await c.submit_order(order_spec(2500), "same-key"))["id"])

        assert len(set(await asyncio.gather(*(same(s) for s in servers)))) == 1
        # a signed request replayed to another process: its nonce is refused there
        body, target = dumps(order_spec(2500)), PUBLIC + "/v1/orders"
        first = Routed(servers[0].url, buyers[1])
        headers = {**first.sign("POST", target, body), "Content-Type": "application/json", "Idempotency-Key": "n1"}
        async with first, Routed(servers[1].url, buyers[1]) as second:
            assert (await first.send("POST", target, body, headers))[0] == 201
            status, raw = await second.send("POST", target, body, headers)
        assert status == 401 and b"nonce_replayed" in raw, raw

        # kill -9 the lease holder while it runs a periodic round
        async def interval_round() -> Any:
            rows = await sql(url, "SELECT id FROM rounds WHERE status = 'running' AND trigger = 'interval'")
            return rows[0][0] if rows else None

        killed_round = await until(interval_round, 30, "a periodic round running")
        held = await lease_row(url)
        assert held is not None
        epoch, holder = held
        victim = next(s for s in servers if s.pid == holder)
        t0 = time.monotonic()
        victim.kill_group()

        async def moved() -> Any:
            now = await lease_row(url)
            return now if now and now[0] > epoch and now[1] != holder else None

        new_epoch, new_holder = await until(moved, 10, "the lease to move to another process")
        takeover = time.monotonic() - t0
        assert takeover < 10 and new_epoch == epoch + 1 and new_holder in {s.pid for s in servers if s is not victim}

        async def round_status() -> Any:
            rows = await sql(url, "SELECT status FROM rounds WHERE id = :i", i=killed_round)
            return rows[0][0] if rows[0][0] != "running" else None

        assert await until(round_status, 15, "the killed round to be closed") == "abandoned"

        async def cleared_after() -> Any:
            q = "SELECT count(*) FROM rounds WHERE status = 'completed' AND trigger = 'interval' AND started_at >= :t"
            return (await sql(url, q, t=int(time.time()) - 1))[0][0]

        await until(cleared_after, 15, "a periodic round by the new holder")
        for s in servers:
            if s is not victim:
                assert s.stop() == 0, s.log()[-3000:]
    finally:
        for s in servers:
            s.kill_group()

    st = await state(url)
    assert_never_oversold(st)
    assert [r for r in st["rounds"] if r.status == "running"] == []
    assert st["contracts"], "the market cleared nothing"
    rounds_of: dict[str, set[str | None]] = defaultdict(set)
    for c in st["contracts"]:
        rounds_of[c.order_id].add(c.round_id)
    assert all(len(r) == 1 for r in rounds_of.values()), "an order was matched by two rounds"
    triples = [(c.round_id, c.order_id, c.pool_id) for c in st["contracts"]]
    assert len(triples) == len(set(triples))
    assert (await sql(url, "SELECT count(*) FROM orders WHERE idempotency_key = 'same-key'"))[0][0] == 1
    logged = {r[0] for r in await sql(url, "SELECT record_id FROM log_entries WHERE record_type = 'contract'")}
    assert logged == {c.id for c in st["contracts"]}
    # the duties ran in one process at a time: checkpoints signed by the two holders only, all one key
    signers = {s.pid for s in servers if "checkpoint size=" in s.log()}
    assert signers <= {holder, new_holder} and holder in signers, signers
    verifier, origin = await exchange_verifier(url, keys)
    notes = await sql(url, "SELECT note, key_id, size FROM checkpoints ORDER BY size")
    assert len(notes) >= 2 and {n[1] for n in notes} == {verifier.key_id.hex()}
    for note, _kid, size in notes:
        assert verify_checkpoint(note, [verifier], origin=origin).size == size
    assert takeover < 10


def children(pid: int) -> set[int]:
    """Child process ids (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


@PG_ONLY
async def test_workers_restart_and_an_export_survives_a_kill(
    fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = fresh_db_factory()
    keys = tmp_path / "keys"
    await populate(url, keys, pools=3, orders=12)
    _buyers, operator, regulator = await people(url, keys, buyers=0)
    env = {**FAST, "HETEX_DATABASE_URL": url, "HETEX_KEY_DIR": str(keys), "HETEX_ROUND_INTERVAL_SECONDS": "0"}
    env["HETEX_EXPORTS_DIR"] = str(tmp_path / "exports")
    server = Server(tmp_path / "srv", env, args=["--workers", "2"])
    try:
        await server.start(**{EXPORT_DELAY_ENV: "60"}).ready()
        workers = await until(lambda: _two(server.pid), 30, "two workers")
        os.kill(min(workers), signal.SIGKILL)
        again = await until(lambda: _two(server.pid, without=min(workers)), 30, "the killed worker replaced")
        assert min(workers) not in again and max(workers) in again
        async with Routed(server.url, operator) as op:
            assert (await op.request("POST", "/v1/rounds"))["contracts"] > 0
        async with Routed(server.url, regulator) as reg:
            job = await reg.request("POST", "/v1/audit/exports", {"from": 0, "to": 2**40})

            async def running() -> bool:
                return bool((await reg.request("GET", f"/v1/audit/exports/{job['id']}"))["status"] == "running")

            await until(running, 30, "the export to run")
        server.kill_group()  # the parent and both workers, mid-export
        assert (await sql(url, "SELECT status FROM audit_exports"))[0][0] == "running"

        await server.start().ready()  # restarted without the delay: the lease holder resumes the job
        async with Routed(server.url, regulator) as reg:

            async def finished() -> Any:
                st = await reg.request("GET", f"/v1/audit/exports/{job['id']}")
                return st if st["status"] in ("done", "failed") else None

            status = await until(finished, 60, "the export to finish after the restart")
            assert status["status"] == "done", status
            bundle = await reg.download(f"/v1/audit/exports/{job['id']}/bundle")
        assert (await sql(url, "SELECT attempts FROM audit_exports"))[0][0] == status["progress"]["attempts"] == 2
        path = tmp_path / "bundle.tar.gz"
        path.write_bytes(bundle)
        assert tarfile.is_tarfile(path)
        verifier, _origin = await exchange_verifier(url, keys)
        report = verify_bundle(path, trusted_keys=[verifier.key])
        assert report.ok, [str(p) for p in report.problems]
        assert report.records == status["progress"]["records_exported"] > 0
        last = children(server.pid)
        assert server.stop() == 0, server.log()[-3000:]
        assert not any(_alive(pid) for pid in last)
    finally:
        server.kill_group()


async def _two(pid: int, without: int | None = None) -> set[int] | None:
    """The two worker pids of supervisor `pid` once there are two (not counting `without`), else None."""
    found = {c for c in children(pid) if _is_worker(c)} - ({without} if without else set())
    return found if len(found) == 2 else None


def _alive(pid: int) -> bool:
    """Whether process `pid` still exists (or is a zombie of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _is_worker(pid: int) -> bool:
    """A forked `hetex serve` worker (not a solver process it started)."""
    try:
        return b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_sqlite_refuses_several_workers(tmp_path: Path) -> None:
    db = tmp_path / "hetex.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETEX_")}
    cmd = [sys.executable, "-m", "exchange", "serve", "--dev", "--workers", "2", "--database-url", f"sqlite:///{db}"]
    done = subprocess.run(cmd, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"--workers 2 needs PostgreSQL" in done.stderr and b"Traceback" not in done.stderr
    assert not db.exists()  # refused before any database access


@PG_ONLY
async def test_workers_stop_when_their_supervisor_is_killed(
    fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = fresh_db_factory()
    env = {**FAST, "HETEX_DATABASE_URL": url, "HETEX_KEY_DIR": str(tmp_path / "keys")}
    server = Server(tmp_path / "srv", env, args=["--workers", "2"])
    try:
        await server.start().ready()
        workers = await until(lambda: _two(server.pid), 30, "two workers")
        os.kill(server.pid, signal.SIGKILL)  # the parent only
        await asyncio.to_thread(server.popen.wait, 10)  # type: ignore[union-attr]

        async def gone() -> bool:
            return not any(_alive(p) for p in workers)

        await until(gone, 20, "the orphaned workers to stop")
        assert "the supervisor (pid" in server.log()
    finally:
        server.kill_group()


def test_workers_refuse_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HETEX_")}
        url = "postgresql://nobody@127.0.0.1:1/none"  # never reached: the port is checked first
        cmd = [sys.executable, "-m", "exchange", "serve", "--dev", "--workers", "2", "--port", str(port)]
        cmd += ["--database-url", url]
        done = subprocess.run(cmd, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}".encode() in done.stderr and b"Traceback" not in done.stderr
