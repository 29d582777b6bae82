"""Real `hetex serve` processes on loopback addresses, each with its own SQLite file, key dir and authority."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange.client import HetexClient
from exchange.composition import build_services
from exchange.services.participants import participant_key_id
from exchange.settings import Settings
from federation.httpsig import sign_request
from federation.keys import SigningKey
from tests.federation.fedkit import free_port

REPO = Path(__file__).resolve().parents[2]

#: Short intervals so a test sees summaries, resync, forwarding and hold expiry within seconds.
FAST_ENV = {
    "HETEX_FEDERATION_SUMMARY_INTERVAL_SECONDS": "1",
    "HETEX_FEDERATION_SUMMARY_TTL_SECONDS": "30",
    "HETEX_FEDERATION_SYNC_INTERVAL_SECONDS": "1",
    "HETEX_FEDERATION_FORWARD_INTERVAL_SECONDS": "0.1",
    "HETEX_FEDERATION_FORWARD_AFTER_SECONDS": "0",
    "HETEX_FEDERATION_SWEEP_INTERVAL_SECONDS": "0.5",
    "HETEX_FEDERATION_HOLD_TTL_SECONDS": "3",
    "HETEX_FEDERATION_PEER_TIMEOUT_SECONDS": "3",
    "HETEX_ROUND_INTERVAL_SECONDS": "2",
    "HETEX_CHECKPOINT_INTERVAL_SECONDS": "1",
}


@dataclass
class Proc:
    """One exchange process and where its state lives."""

    authority: str
    host: str
    port: int
    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    #: The operator participant's key (registered by start_and_peer): every `get` is signed with it.
    operator_key: SigningKey = field(default_factory=SigningKey.generate)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def db_path(self) -> Path:
        """Its SQLite file."""
        return self.root / "hetex.db"

    @property
    def db_url(self) -> str:
        """Its async database URL (for the seeding helpers)."""
        return f"sqlite+aiosqlite:///{self.db_path}"

    @property
    def key_dir(self) -> Path:
        """Its key directory."""
        return self.root / "keys"

    def env(self) -> dict[str, str]:
        """Environment of its processes (server and CLI)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HETEX_")}
        env.update(FAST_ENV)
        env.update(
            {
                "HETEX_DATABASE_URL": f"sqlite:///{self.db_path}",
                "HETEX_KEY_DIR": str(self.key_dir),
                "HETEX_AUTHORITY": self.authority,
                "HETEX_ORIGIN": f"{self.authority.lower()}.hetex.test/log",
                "HETEX_PUBLIC_BASE_URL": self.url,
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start `python -m exchange serve` (returns at once; see wait_ready)."""
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "serve.log").open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "exchange", "serve", "--host", self.host, "--port", str(self.port)],
            cwd=self.root,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /healthz answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.authority} exited: {self.log_tail()}")
            try:
                get_json(self.url + "/healthz", timeout=1)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise TimeoutError(f"{self.authority} did not start: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL (a crash: no cleanup)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a `hetex` CLI command against this exchange's database (caller waits)."""
        return subprocess.Popen(
            [sys.executable, "-m", "exchange", *args], cwd=self.root, env=self.env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def get(self, path: str) -> Any:
        """GET JSON from this exchange, signed by its operator (federation reads need a signed request)."""
        url = self.url + path
        key = self.operator_key
        return get_json(url, headers=sign_request("GET", url, {}, b"", key, participant_key_id(key.public)))

    def log_tail(self, n: int = 3000) -> str:
        """End of its server log."""
        try:
            return (self.root / "serve.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""


def get_json(url: str, timeout: float = 5, headers: Mapping[str, str] | None = None) -> Any:
    """GET and parse JSON (urllib: no event loop needed in sync tests)."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=dict(headers or {})), timeout=timeout) as resp:
        return json.loads(resp.read())


def post_raw(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, Any]:
    """POST exact bytes; status and parsed JSON answer (errors included)."""
    req = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy; its value, or AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def make_procs(root: Path, authorities: list[str]) -> list[Proc]:
    """One process description per authority on 127.0.0.(11+i) with a free port."""
    procs = []
    for i, authority in enumerate(authorities):
        host = f"127.0.0.{11 + i}"
        procs.append(Proc(authority, host, free_port(host), root / authority))
    return procs


def start_and_peer(procs: list[Proc]) -> None:
    """Start every server (schema migrated on start), then make each trust the others. Peers are added by
    the same service call `hetex admin add-peer` makes, in this process (six CLI start-ups would dominate
    the test's time; tests/federation/test_federation_cli.py runs the CLI itself)."""
    for p in procs:
        p.start()
    for p in procs:
        p.wait_ready()
    identities = {p.authority: get_json(p.url + "/v1/federation/identity") for p in procs}

    async def add_all() -> None:
        for p in procs:
            settings = Settings.from_env(p.env())
            svc = await build_services(settings)
            try:
                await svc.participants.add_by_operator("operator", "test operator", p.operator_key.public.to_base64())
                for q in procs:
                    if q is not p:
                        await svc.federation.peers.add_peer(q.url, identities[q.authority]["verifier_key"], q.authority)
            finally:
                await svc.federation.close()
                await svc.close()

    asyncio.run(add_all())


# ------------------------------------------------------------------------------------------ through the API


def api_provider(p: Proc, *, region: str, model: str, devices: int, ask_fen: int) -> dict[str, Any]:
    """Register a provider at `p` through its signed HTTP API: site, heartbeat, pool, offer. The pool."""

    async def go() -> dict[str, Any]:
        async with HetexClient(p.url, SigningKey.generate()) as client:
            await client.register("provider", f"provider in {region}")
            site = await client.add_site(region, f"{model} hall")
            await client.heartbeat(site["cri"])
            pool = await client.add_pool(site["cri"], model, devices)
            await client.post_offer(pool["cri"], devices, ask_fen, int(time.time()) - 60, min_lease_seconds=600)
            return pool

    return asyncio.run(go())


def api_buyer_order(p: Proc, spec: Mapping[str, Any]) -> str:
    """Register a buyer at `p` and submit `spec` through the order API; the order id."""

    async def go() -> str:
        async with HetexClient(p.url, SigningKey.generate()) as client:
            await client.register("buyer", "buyer", home_region="CN-SH")
            order = await client.submit_order(spec, idempotency_key=f"k-{time.monotonic_ns()}")
            return str(order["id"])

    return asyncio.run(go())
