"""Issue 10 must-show: two `hetex serve` processes and a `hetex round run` on one PostgreSQL, each started from
its own folder with the shared key directory: one exchange key, every checkpoint verifies against it; then a
`hetex admin rotate-key` while requests flow: every checkpoint signed before and after verifies, each within
its key's validity, and both running servers sign with the new key without a restart."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.pool import NullPool

from exchange.client import HetexClient
from exchange.storage.engine import make_engine, make_sessionmaker
from exchange.storage.ledger import Checkpoint
from federation.keys import Keyring, VerifyKey
from federation.note import verify_checkpoint
from tests.exchange.ledgerkit import make_ledger, record
from tests.exchange.registration_support import order_body
from tests.exchange.test_rounds_processes import populate
from tests.federation.fedkit import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "hetex.example/log"


def env_for(key_dir: Path, **extra: str) -> dict[str, str]:
    """A clean HETEX_* environment: the shared key directory, fast checkpoints and rounds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETEX_")}
    env.update(
        PYTHONPATH=str(ROOT),
        HETEX_KEY_DIR=str(key_dir),
        HETEX_ORIGIN=ORIGIN,
        HETEX_CHECKPOINT_INTERVAL_SECONDS="0.2",
        HETEX_ROUND_INTERVAL_SECONDS="1",
        **extra,
    )
    return env


def start_serve(url: str, cwd: Path, key_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """`python -m exchange serve` from `cwd` (its output in cwd/serve.log)."""
    cwd.mkdir(parents=True, exist_ok=True)
    log = (cwd / "serve.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exchange",
            "serve",
            "--database-url",
            url,
            "--port",
            str(port),
            "--public-base-url",
            f"http://127.0.0.1:{port}",
        ],
        cwd=cwd,
        env=env_for(key_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_ready(proc: subprocess.Popen[bytes], base: str, cwd: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve in {cwd} exited: {(cwd / 'serve.log').read_text()[-3000:]}")
        try:
            get_json(base + "/healthz")
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"serve in {cwd} did not start: {(cwd / 'serve.log').read_text()[-3000:]}")


def cli(url: str, key_dir: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """A `hetex` command from `cwd` against the database `url`."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "exchange", *args, "--database-url", url],
        cwd=cwd,
        env=env_for(key_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def checkpoints(url: str) -> list[Checkpoint]:
    engine = make_engine(url, poolclass=NullPool)
    try:
        async with make_sessionmaker(engine)() as s:
            return list((await s.scalars(select(Checkpoint).order_by(Checkpoint.size))).all())
    finally:
        await engine.dispose()


def published_keyring(base: str) -> tuple[str, dict[str, dict[str, Any]], Keyring]:
    """(current key id, keys by id, keyring with validity) from GET /v1/ledger/keys."""
    doc = get_json(base + "/v1/ledger/keys")
    ring = Keyring()
    for k in doc["keys"]:
        ring.add(
            k["key_id"],
            VerifyKey.from_base64(k["public_key"]),
            name=k["name"],
            not_before=k["not_before"],
            not_after=k["not_after"],
        )
    return doc["current"], {k["key_id"]: k for k in doc["keys"]}, ring


def assert_all_checkpoints_verify(rows: list[Checkpoint], keys: dict[str, dict[str, Any]], ring: Keyring) -> None:
    """Every stored checkpoint verifies under the published keys, signed while its key was valid."""
    for row in rows:
        cp = verify_checkpoint(row.note, ring, origin=ORIGIN)
        assert (cp.size, cp.root) == (row.size, row.root)
        k = keys[row.key_id]
        assert k["not_before"] <= row.created_at and (k["not_after"] is None or row.created_at <= k["not_after"])


@pytest.mark.parametrize("backend", ["pg"], indirect=True)  # the multi-process claim is about PostgreSQL
async def test_two_servers_and_a_round_from_different_folders_one_key_rotation_under_load(
    fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = fresh_db_factory()
    keys = tmp_path / "shared-keys"  # the exchange's key directory (a secrets volume in production)
    ports = [free_port("127.0.0.1"), free_port("127.0.0.1")]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_serve(url, tmp_path / "folder-a", keys, ports[0]))  # empty database: creates the key
        wait_ready(procs[0], bases[0], tmp_path / "folder-a")
        procs.append(start_serve(url, tmp_path / "folder-b", keys, ports[1]))
        wait_ready(procs[1], bases[1], tmp_path / "folder-b")
        (only,) = list(keys.glob("*.pem"))
        first_id = only.stem
        assert [get_json(b + "/v1/ledger/keys")["current"] for b in bases] == [first_id, first_id]
        assert not list((tmp_path / "folder-b").rglob("*.pem"))

        await populate(url, keys, pools=6, orders=6)
        code, out, err = await asyncio.to_thread(
            _communicate, cli(url, keys, tmp_path / "folder-c", "round", "run", "--json")
        )
        assert code == 0, err[-2000:]
        assert json.loads(out)["status"] == "completed"  # (the servers' own rounds may have cleared it first)

        # load: a buyer submits orders to both servers (their rounds sign contracts), a writer appends records,
        # both servers publish checkpoints every 0.2 s; the operator rotates the key in the middle
        stop = asyncio.Event()
        buyer = HetexClient(bases[0], _new_key())
        await buyer.register("buyer", "load", "CN-SH")
        sent = {"orders": 0, "records": 0}

        async def orders() -> None:
            i = 0
            while not stop.is_set():
                client = HetexClient(bases[i % 2], buyer.key, session=buyer.session)
                await client.submit_order(order_body(quantity_devices=1, duration_seconds=3600), f"load-{i}")
                sent["orders"] += 1
                i += 1
                await asyncio.sleep(0.05)

        async def writer() -> None:
            engine = make_engine(url, poolclass=NullPool)
            try:
                ledger = await make_ledger(make_sessionmaker(engine), keys, ORIGIN)
                i = 0
                while not stop.is_set():
                    async with ledger.sessions.begin() as s:
                        await ledger.append(s, "contract", f"load-{i}", record(i))
                    sent["records"] += 1
                    i += 1
                    await asyncio.sleep(0.02)
            finally:
                await engine.dispose()

        tasks = [asyncio.create_task(orders()), asyncio.create_task(writer())]
        await asyncio.sleep(3)
        before = await checkpoints(url)
        rot = cli(url, keys, tmp_path / "folder-e", "admin", "rotate-key", "--overlap", "0")
        code, out, err = await asyncio.to_thread(_communicate, rot)
        assert code == 0, err[-2000:]
        new_id = json.loads(out)["current"]
        assert new_id != first_id
        await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*tasks)
        await buyer.close()
        assert sent["orders"] > 10 and sent["records"] > 10

        rows = await checkpoints(url)
        signers = [r.key_id for r in rows]
        assert {r.key_id for r in before} == {first_id} and len(before) >= 3
        assert signers.count(new_id) >= 3 and set(signers) == {first_id, new_id}
        assert signers == sorted(signers, key=lambda k: k == new_id)  # old key never signs after the new one
        for base in bases:  # both running servers publish the new key as current, no restart
            current, published, ring = published_keyring(base)
            assert current == new_id
            assert_all_checkpoints_verify(rows, published, ring)
        code, out, err = await asyncio.to_thread(
            _communicate, cli(url, keys, tmp_path / "folder-f", "ledger", "verify")
        )
        assert code == 0 and "ok:" in out, out + err[-2000:]
        assert sorted(p.stem for p in keys.glob("*.pem")) == sorted([first_id, new_id])
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _communicate(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _new_key() -> Any:
    from federation.keys import SigningKey

    return SigningKey.generate()
