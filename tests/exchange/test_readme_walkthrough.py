"""The README's service walkthrough, replayed literally: every command of its shell blocks runs as written, in one
bash session in an empty directory, against a real `hetex serve` (SQLite default file, or PostgreSQL through
HETEX_DATABASE_URL), ending with a regulator's audit export verified with --trusted-key."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def walkthrough_blocks() -> list[str]:
    """The ```sh blocks between the README's walkthrough markers."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- walkthrough:start -->(.*?)<!-- walkthrough:end -->", readme, re.S)
    assert found is not None, "README.md lost its walkthrough markers"
    return re.findall(r"```sh\n(.*?)```", found.group(1), re.S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_walkthrough_covers_every_role() -> None:
    script = "\n".join(walkthrough_blocks())
    for needle in ("hetex serve", "provider register", "buyer register", "order submit", "round run"):
        assert needle in script
    assert "contract confirm" in script and "statement" in script
    assert re.search(r"hetex audit export .*--trusted-key", script)


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(
    backend: str, fresh_db_factory: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    port = free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "HETEX_PORT": str(port),
        "HETEX_URL": f"http://127.0.0.1:{port}",
    }
    if backend == "pg":
        env["HETEX_DATABASE_URL"] = fresh_db_factory()
    script = "\n".join(walkthrough_blocks())
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server if the script stopped before `kill $SERVER`
    seconds = time.perf_counter() - started
    log = (work / "serve.log").read_text(encoding="utf-8") if (work / "serve.log").exists() else ""
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}\nserve.log (tail):\n{log[-3000:]}"
    assert "Traceback" not in err
    assert "verified:" in out and "signed by a --trusted-key" in out
    assert re.search(r"contracts \(1\)", out) and "confirmed" in out
    assert (home / ".config" / "hetex" / "config.toml").is_file()  # profiles live in the XDG config, not here
    with capsys.disabled():
        print(f"\nREADME walkthrough on {backend}: {seconds:.1f} s")
