"""`hetex demo` end to end: the real server on a temporary SQLite database, driven through the HTTP API.

The subprocess tests are the CI proof that the README's first command works; the summary is checked
against the issue's requirements (regions, models, billing modes, balanced settlement, verified audit,
welfare within the LP bound) by recomputing from the reported records, not by trusting its flags.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exchange.audit.verify import verify_bundle
from exchange.cli.main import main
from exchange.demo import Demo, StepFailed
from identifiers.catalogue import load_catalogue

ROOT = Path(__file__).resolve().parents[2]
MODES = ("per_minute", "compute_tier", "subscription", "project")


def run_demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange", "demo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_demo_json_summary() -> None:
    proc = run_demo("--json")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    s: dict[str, Any] = json.loads(proc.stdout)
    assert s["ok"] is True and all(step["ok"] for step in s["steps"])

    catalogue = load_catalogue()
    assert len(s["regions"]) >= 6
    assert len(s["models"]) >= 8
    origins = {catalogue.get(m).domestic for m in s["models"]}
    assert origins == {True, False}  # domestic and imported accelerators
    assert any(catalogue.get(m).vendor == "NVIDIA" for m in s["models"])

    by_mode = {m: [c for c in s["contracts"] if c["billing_mode"] == m] for m in MODES}
    assert all(len(cs) >= 1 for cs in by_mode.values()), {m: len(cs) for m, cs in by_mode.items()}
    assert s["contracts_by_mode"] == {m: len(cs) for m, cs in by_mode.items()}

    settled_contracts = {r["contract_id"] for r in s["settlements"]}
    assert settled_contracts == {c["id"] for c in s["contracts"]}
    for r in s["settlements"]:
        assert r["buyer_debit_fen"] == r["provider_credit_fen"] + r["fee_fen"], r
        assert r["fee_fen"] >= 0 and r["provider_credit_fen"] > 0
    for mode in MODES:
        records = [r for r in s["settlements"] if r["billing_mode"] == mode]
        assert records, mode
        assert s["settlement_by_mode"][mode]["buyer_debit_fen"] == sum(r["buyer_debit_fen"] for r in records)

    for rnd in s["rounds"]:
        assert rnd["welfare_fen"] <= rnd["lp_bound_fen"], rnd
        assert rnd["audit"]["budget_balanced"] is True

    v = s["audit_verification"]
    assert v["ok"] is True and v["problems"] == []
    assert v["trusted_key_pinned"] is True
    assert v["records"] == v["signatures_checked"] == v["proofs_checked"] == s["checkpoint"]["size"]
    assert v["totals"]["settled"]["fen"] == sum(r["buyer_debit_fen"] for r in s["settlements"])
    unfilled = [o for o in s["orders"] if not o["contracts"]]
    assert [o["flags"] for o in unfilled] == [["limit_below_asks"]]


@pytest.mark.slow
def test_demo_tables_and_kept_bundle(tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    proc = run_demo("--keep", str(keep))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    for title in ("Registered pools", "Orders and fills", "Clearing rounds", "Clearing prices", "Contracts"):
        assert title in out
    assert "Settlement by billing mode" in out and "offline verification" in out
    assert "all 14 steps succeeded" in out
    [bundle] = keep.glob("hetex-audit-*.tar.gz")
    assert (keep / "hetex.db").is_file()
    assert verify_bundle(bundle).ok  # the kept bundle verifies again, outside the demo
    assert main(["audit", "verify", str(bundle)]) == 3  # consistent, but no --trusted-key: UNTRUSTED
    trusted = keep / "keys" / "exchange.pub"
    assert main(["audit", "verify", str(bundle), "--trusted-key", str(trusted)]) == 0  # as the output says
    assert f"--trusted-key {trusted}" in out.replace("\n", "")
    kept = sorted(p.name for p in (keep / "keys" / "participants").glob("*.pem"))
    assert len(kept) >= 9 and "regulator-compute-market-regulator-demo.pem" in kept


def test_keep_refuses_a_non_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "something").write_text("x")
    assert main(["demo", "--keep", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


async def test_a_failing_step_is_named(tmp_path: Path) -> None:
    demo = Demo(tmp_path)

    async def boom() -> str:
        raise ValueError("no capacity in CN-XX")

    with pytest.raises(StepFailed) as info:
        await demo.step("register providers", boom)
    assert info.value.step == "register providers"
    assert "ValueError: no capacity in CN-XX" in info.value.reason
    assert [s.ok for s in demo.steps] == [False]


async def test_a_server_that_cannot_start_fails_the_first_step(tmp_path: Path) -> None:
    blocker = tmp_path / "keys"
    blocker.write_text("not a directory")  # the key directory cannot be created
    demo = Demo(tmp_path)
    with pytest.raises(StepFailed) as info:
        await demo.run()
    assert info.value.step == "start the exchange"
    assert demo.runner is None and demo.http is None


def test_json_failure_names_the_step_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--json", "--port", str(port)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["failed_step"] == "start the exchange"
    assert str(port) in out["error"]
    assert [s["ok"] for s in out["steps"]] == [False]
