"""`hetex serve` starts on the embedded default and answers /healthz; `--no-migrate` refuses a schema that is
behind with a clear message (exit 2); `hetex db current|upgrade` report and fix it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hetex(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("HETEX_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_serve_on_embedded_default_answers_healthz(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("HETEX_DATABASE_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exchange",
            "serve",
            "--port",
            str(port),
            "--public-base-url",
            f"http://127.0.0.1:{port}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not answer /healthz within 60 s"
                time.sleep(0.2)
        assert (tmp_path / "hetex.db").exists()  # SQLite file in the working directory, no set-up
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_no_migrate_refuses_then_db_upgrade_fixes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    refused = _hetex("serve", "--dev", "--no-migrate", "--port", str(_free_port()), "--database-url", url, cwd=tmp_path)
    assert refused.returncode == 2
    assert "hetex db upgrade" in refused.stderr and "Traceback" not in refused.stderr
    behind = _hetex("db", "current", "--database-url", url, cwd=tmp_path)
    assert behind.returncode == 1 and "behind" in behind.stdout
    assert _hetex("db", "upgrade", "--database-url", url, cwd=tmp_path).returncode == 0
    current = _hetex("db", "current", "--database-url", url, cwd=tmp_path)
    assert current.returncode == 0 and "up to date" in current.stdout


def test_bad_database_url_is_a_usage_error(tmp_path: Path) -> None:
    out = _hetex("db", "current", "--database-url", "mysql://x/y", cwd=tmp_path)
    assert out.returncode == 2
    assert "unsupported database URL" in out.stderr and "Traceback" not in out.stderr
