"""`hetex login`: a one-time link from a signed request, --list and --revoke; usage errors exit 2 with one line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.client import HetexClient
from federation.keys import SigningKey
from tests import dbs
from tests.exchange.registration_support import LiveServer

REPO = Path(__file__).resolve().parents[2]


def hetex(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HETEX_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    dbs.migrate(url)
    with LiveServer(url, tmp_path) as server:
        yield server


def _buyer(live: LiveServer, tmp_path: Path) -> Path:
    key = SigningKey.generate()

    async def go() -> None:
        async with HetexClient(live.base, key) as c:
            await c.register("buyer", "CLI buyer", "CN-SH")

    asyncio.run(go())
    path = tmp_path / "buyer.pem"
    path.write_bytes(key.to_pem())
    return path


@pytest.mark.slow
def test_login_web_list_and_revoke(live: LiveServer, tmp_path: Path) -> None:
    key = _buyer(live, tmp_path)
    made = hetex("login", "--web", "--json", "--url", live.base, "--key", str(key))
    assert made.returncode == 0, made.stderr
    link = json.loads(made.stdout)
    assert link["link"].startswith(live.base + "/login/") and link["role"] == "buyer"
    human = hetex("login", "--web", "--url", live.base, "--key", str(key))
    assert human.returncode == 0 and human.stdout.startswith(live.base + "/login/")
    listed = json.loads(hetex("login", "--list", "--json", "--url", live.base, "--key", str(key)).stdout)
    assert {s["id"] for s in listed["sessions"]} >= {link["session_id"]}
    revoked = hetex("login", "--revoke", link["session_id"], "--url", live.base, "--key", str(key))
    assert revoked.returncode == 0 and "revoked" in revoked.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["login", "--url", "http://127.0.0.1:9", "--key", "k.pem"], "choose one of --web, --list or --revoke"),
        (["login", "--web", "--list", "--key", "k.pem"], "choose one of --web, --list or --revoke"),
        (["login", "--web", "--url", "http://127.0.0.1:9"], "no key"),
    ],
)
def test_login_usage_errors_exit_2(args: list[str], message: str) -> None:
    out = hetex(*args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_login_unreachable_exchange_exits_4(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(SigningKey.generate().to_pem())
    out = hetex("login", "--web", "--url", "http://127.0.0.1:9", "--key", str(key))
    assert out.returncode == 4 and "cannot reach" in out.stderr and "Traceback" not in out.stderr  # 4: unreachable
