"""Real `hetex serve` processes sharing one PostgreSQL database (tests of workers, the duties lease and
durable jobs): start from their own working folder, signed clients routed to one of them, DB peeks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from exchange.client import HetexClient
from exchange.storage.engine import make_engine

ROOT = Path(__file__).resolve().parents[2]
#: The one public URL every process answers for (as behind a load balancer): signatures bind to it.
PUBLIC = "https://hetex.test"


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """One `hetex serve` process (or supervisor, with --workers) started in its own folder."""

    root: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where it listens."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Its process id."""
        assert self.popen is not None
        return self.popen.pid

    def start(self, **extra_env: str) -> Server:
        """Start it (own session, so a kill of the group takes its workers too); returns at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HETEX_")}
        env.update({"PYTHONPATH": str(ROOT), **self.env, **extra_env})
        cmd = [sys.executable, "-m", "exchange", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        with (self.root / "serve.log").open("ab") as log:
            self.popen = subprocess.Popen(
                cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    async def ready(self, within: float = 60) -> None:
        """Until /healthz answers 200."""
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.popen is not None and self.popen.poll() is None, self.log()[-3000:]
                try:
                    async with session.get(self.url + "/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"server did not start: {self.log()[-3000:]}")

    def kill_group(self) -> None:
        """SIGKILL the process and its workers (a crash: no clean-up anywhere)."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, within: float = 30) -> int:
        """SIGTERM; its exit status (SIGKILL of the group if it lingers)."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(within)
            except subprocess.TimeoutExpired:
                self.kill_group()
        return int(self.popen.returncode)

    def log(self) -> str:
        """Its log so far."""
        try:
            return (self.root / "serve.log").read_text(errors="replace")
        except OSError:
            return ""


class Routed(HetexClient):
    """A client signing for PUBLIC and sending to one process (`target`), like a load balancer would."""

    def __init__(self, target: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(PUBLIC, *args, **kwargs)
        self.target = target

    async def send(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """Send to `target` what was signed for PUBLIC."""
        assert url.startswith(PUBLIC)
        return await super().send(method, self.target + url[len(PUBLIC) :], body, headers)


async def sql(url: str, query: str, **params: Any) -> list[Any]:
    """Rows of one query on a fresh connection (the servers' state, as committed)."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(query), params)).all())
    finally:
        await engine.dispose()


async def until(check: Callable[[], Awaitable[Any]], within: float, what: str, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; that value, or AssertionError naming `what`."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {within}s waiting for {what}; last: {last!r}")
