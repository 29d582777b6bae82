"""A real `hetex serve` subprocess and `hetex agent run` subprocesses with simulated devices, for the
end-to-end and fault tests of the node agent (and the agents bench)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.abc

from exchange.agent.config import AgentConfig
from exchange.agent.journal import Journal
from exchange.client import HetexClient
from federation.keys import SigningKey, save_signing_key

ROOT = Path(__file__).resolve().parents[3]


def simulated_config(
    tmp_path: Path, exchange_url: str, site: str, devices: dict[str, int], **options: Any
) -> tuple[AgentConfig, Path]:
    """An in-process agent's config on a simulated device source (its state file written with `devices`, model ->
    count) and the state file, for tests that drive the Agent with a test client's key."""
    state = tmp_path / "devices.json"
    state.write_text(json.dumps({"devices": [{"model": m, "count": n} for m, n in devices.items()]}))
    cfg = AgentConfig(
        exchange_url=exchange_url,
        site=site,
        key=tmp_path / "unused.pem",
        journal=tmp_path / "journal.db",
        source="simulated",
        source_file=state,
        **options,
    )
    return cfg, state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("HETEX_")}
    out["PYTHONPATH"] = str(ROOT)
    return out


class ExchangeProc:
    """`python -m exchange serve` on a SQLite file; kill and start again on the same port and database."""

    def __init__(
        self,
        workdir: Path,
        database_url: str | None = None,
        slot_seconds: int = 5,
        host_name: str = "127.0.0.1",
        **settings: str,
    ) -> None:
        self.workdir = workdir
        self.settings = {f"HETEX_{k.upper()}": v for k, v in settings.items()}
        self.slot_seconds = slot_seconds
        self.port = free_port()
        self.url = f"http://{host_name}:{self.port}"  # a name (localhost) lets agents resolve it to a relay
        self.database_url = database_url or f"sqlite+aiosqlite:///{workdir / 'hetex.db'}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = (workdir / "serve.log").open("ab")

    async def start(self) -> None:
        """Start and wait for /healthz."""
        cmd = [sys.executable, "-m", "exchange", "serve", "--database-url", self.database_url]
        cmd += ["--port", str(self.port), "--public-base-url", self.url, "--key-dir", str(self.workdir / "keys")]
        full = {**env(), "HETEX_ROUND_SLOT_SECONDS": str(self.slot_seconds), **self.settings}  # compressed clock
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            cmd, cwd=self.workdir, env=full, stdout=self.log, stderr=self.log, start_new_session=True
        )
        deadline = time.monotonic() + 180  # generous: a loaded machine starts Python slowly
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, (self.workdir / "serve.log").read_text()[-3000:]
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("hetex serve did not come up")

    def alive(self) -> bool:
        """Still running (a server that died on its own shows its exit code in the assertion)."""
        assert self.proc is not None
        assert self.proc.poll() is None, f"hetex serve exited {self.proc.returncode}"
        return True

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def add_operator(self) -> HetexClient:
        """An operator key (added straight to the database, as `hetex admin add-operator` does)."""
        from exchange.composition import build_services
        from exchange.settings import Settings

        key = SigningKey.generate()
        svc = await build_services(Settings(database_url=self.database_url, key_dir=self.workdir / "keys"))
        try:
            await svc.participants.add_by_operator("operator", "operator", key.public.to_base64())
        finally:
            await svc.close()
        return HetexClient(self.url, key)


@dataclass
class Node:
    """One provider with one site, one pool and one open offer, and the agent config for it."""

    name: str
    client: HetexClient
    site_cri: str
    pool: dict[str, Any]
    offer: dict[str, Any]
    config: Path
    state: Path
    journal: Path
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def set_state(self, *, count: int, removed: tuple[str, ...] = (), failed: tuple[str, ...] = ()) -> None:
        """Rewrite the simulated device state (the agent re-reads it every scan)."""
        data = {"devices": [{"model": self.pool["model"], "count": count, "utilization_pct": 90}]}
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps({**data, "removed": list(removed), "failed": list(failed)}))
        tmp.replace(self.state)

    def start(self, *, crash_after_send: bool = False) -> None:
        """`python -m exchange agent run --config ...` (its JSON logs go to a file per start); with
        crash_after_send the agent dies (exit 9) once the exchange accepted a report it has not journaled."""
        log = self.config.with_name(f"agent-{len(self.logs)}.log")
        self.logs.append(log)
        out = log.open("wb")
        program = ["tests.exchange.agent.crashing_agent"] if crash_after_send else ["exchange", "agent", "run"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *program, "--config", str(self.config)],
            cwd=self.config.parent,
            env=env(),
            stdout=out,
            stderr=out,
        )

    def kill9(self) -> None:
        """SIGKILL, no clean-up at all."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        """SIGTERM and wait."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def totals(self) -> dict[str, dict[str, int]]:
        """The journal's per-contract totals (read while the agent runs: WAL readers do not block)."""
        j = Journal(self.journal)
        try:
            return j.totals()
        finally:
            j.close()

    def period_ends(self) -> dict[str, int]:
        """Per contract, the end of the last period journaled (closed, sent or not)."""
        j = Journal(self.journal)
        try:
            rows = j.db.execute("SELECT contract_id, max(period_end) FROM reports GROUP BY contract_id").fetchall()
            return {str(cid): int(end) for cid, end in rows}
        finally:
            j.close()

    def answers(self) -> list[str]:
        """The exchange's answer status of every report sent (accepted, duplicate)."""
        j = Journal(self.journal)
        try:
            rows = j.db.execute("SELECT answer FROM reports WHERE answer IS NOT NULL").fetchall()
            return [json.loads(a)["status"] for (a,) in rows]
        finally:
            j.close()

    def pending(self) -> int:
        j = Journal(self.journal)
        try:
            return j.depth()
        finally:
            j.close()

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


async def provider_node(
    ex: ExchangeProc,
    workdir: Path,
    name: str,
    *,
    model: str = "NV-H100-SXM",
    devices: int = 4,
    ask_fen: int = 1000,
    exchange_url: str | None = None,
    **agent: Any,
) -> Node:
    """Register a provider, its site, pool and offer through the API; write the agent's key, state, config."""
    d = workdir / name
    d.mkdir(parents=True)
    key = SigningKey.generate()
    save_signing_key(d / "node.pem", key)
    c = HetexClient(ex.url, key)
    await c.register("provider", name, "CN-SH")
    site = await c.add_site("CN-SH", f"{name} DC")
    pool = await c.add_pool(site["cri"], model, devices, devices_per_node=devices, memory_gb=64)
    now = int(time.time())
    offer = await c.post_offer(
        pool["cri"],
        devices,
        ask_fen,
        now - 60,
        window_end=now + 3 * 3600,
        min_lease_seconds=1,
        billing_modes=["per_minute"],
    )
    settings = {
        "exchange_url": exchange_url or ex.url,
        "site": site["cri"],
        "key": "node.pem",
        "journal": "journal.db",
        "source": "simulated",
        "source_file": "devices.json",
        "auto_confirm": True,
        "heartbeat_seconds": 1.0,
        "scan_seconds": 0.5,
        "period_seconds": 15,
        "request_timeout": 3.0,
        **agent,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    (d / "agent.toml").write_text("\n".join(lines) + "\n")
    node = Node(name, c, site["cri"], pool, offer, d / "agent.toml", d / "devices.json", d / "journal.db")
    node.set_state(count=devices)
    return node


async def wait_for(check: Any, limit: float, what: str, every: float = 0.25) -> Any:
    """Poll an async or plain callable until it returns something truthy."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


class InProcessAgent:
    """A node's agent as an asyncio task in this process (many agents on one machine); `crash()` cancels
    it without any clean-up, like kill -9 at an await point (the journal commits are atomic)."""

    def __init__(self, node: Node, relay_port: int | None = None) -> None:
        self.node = node
        self.relay_port = relay_port  # connect through this relay (a NetworkCut) instead of straight
        self.task: asyncio.Task[None] | None = None
        self.agent: Any = None
        self.session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        from exchange.agent.config import load_config
        from exchange.agent.discovery import SimulatedSource
        from exchange.agent.runner import Agent

        cfg = load_config(self.node.config)
        key = SigningKey.from_pem((self.node.config.parent / "node.pem").read_bytes())
        if self.relay_port is not None:  # same URL (it is what requests are signed for), other route
            connector = aiohttp.TCPConnector(resolver=_ToRelay(self.relay_port), use_dns_cache=False)
            timeout = aiohttp.ClientTimeout(total=cfg.request_timeout)
            self.session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        client = HetexClient(cfg.exchange_url, key, session=self.session, timeout=cfg.request_timeout)
        assert cfg.source_file is not None
        self.agent = Agent(cfg, client, SimulatedSource(cfg.source_file))
        self.task = asyncio.create_task(self.agent.run())

    async def crash(self) -> None:
        assert self.task is not None and self.agent is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self._close()

    async def _close(self) -> None:
        await self.agent.client.close()
        if self.session is not None:
            await self.session.close()
        self.agent.journal.close()

    async def stop(self) -> None:
        assert self.task is not None and self.agent is not None
        self.agent.stop()
        await self.task
        await self._close()


class _ToRelay(aiohttp.abc.AbstractResolver):
    """Resolves any name to the relay on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[Any]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self.port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


class NetworkCut:
    """A TCP relay between agents and the exchange whose network can be cut: open connections are dropped and
    new ones are accepted but never answered (a blackhole, so clients time out, as on a dead link) until
    restored; the exchange itself keeps running."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.is_cut = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.cut()

    def cut(self) -> None:
        """Pull the cable: every open connection dies, new ones hang."""
        self.is_cut = True
        for w in list(self.writers):
            w.transport.abort()

    def restore(self) -> None:
        self.is_cut = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.is_cut:  # swallow the request, answer nothing, until the client gives up or the cut ends
                while self.is_cut:
                    try:
                        if not await asyncio.wait_for(reader.read(65536), 1.0):
                            return
                    except TimeoutError:
                        continue
                return
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            self.writers.add(upstream)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self.writers.discard(w)
                    w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then close the other side too (HTTP keep-alive ends with either side)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()
