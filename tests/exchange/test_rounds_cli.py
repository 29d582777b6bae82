"""CLI of clearing: `hetex match` offline, `hetex bench match`, and on a database `hetex admin
add-operator`, `hetex market snapshot` (replayable by `hetex match`) and `hetex round run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exchange.cli.main import main
from federation.keys import SigningKey
from matching.generators import generate
from tests import dbs
from tests.exchange.test_rounds_processes import populate


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_match_clears_a_snapshot_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snap = tmp_path / "snap.json"
    market = generate("scale", 120, 25, 5)
    snap.write_text(market.to_json())
    code, out, _ = run(capsys, "match", "--market", str(snap), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["format"] == "hetex.clearing-result/1" and result["audit"]["ok"] is True
    assert result["stats"]["orders"] == 120 and result["stats"]["welfare_fen"] <= result["stats"]["lp_bound_fen"]
    assert len(result["allocations"]) == result["stats"]["matched_orders"] or result["allocations"]
    code, out, _ = run(capsys, "match", "--market", str(snap), "--limit", "3")
    assert code == 0 and "clearing" in out and "audit" in out and "allocations" in out


@pytest.mark.parametrize("content", ["not json", '{"now": 1, "pools": "x", "orders": []}'])
def test_match_refuses_a_bad_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str) -> None:
    snap = tmp_path / "bad.json"
    snap.write_text(content)
    code, out, err = run(capsys, "match", "--market", str(snap))
    assert code == 2 and out == "" and "Traceback" not in err and "error" in err
    code, _, err = run(capsys, "match", "--market", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err


def test_bench_match_reports_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "bench", "match", "--family", "greedy-trap", "--orders", "200", "--pools", "40", "--json"
    )
    assert code == 0
    report: dict[str, Any] = json.loads(out)
    for method in ("mcf", "greedy", "fifo"):
        assert report[f"{method}_welfare_fen"] <= report["lp_bound_fen"]
        assert report[f"{method}_audit_ok"] is True
    assert report["mcf_welfare_fen"] >= report["greedy_welfare_fen"] >= 0
    code, out, _ = run(capsys, "bench", "match", "--orders", "60", "--pools", "12")
    assert code == 0 and "against the LP bound" in out and "greedy" in out


async def test_database_verbs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    dbs.migrate(url)
    keys = tmp_path / "keys"
    await populate(url, keys, pools=2, orders=6)
    common = ["--database-url", url]
    env = {"HETEX_KEY_DIR": str(keys)}
    pub = SigningKey.generate().public.to_base64()
    code, out, _ = await _run_thread(
        capsys, "admin", "add-operator", "--key", pub, "--name", "Operator", "--json", *common, env=env
    )
    assert code == 0 and json.loads(out)["role"] == "operator"
    snap = tmp_path / "market.json"
    code, _, err = await _run_thread(capsys, "market", "snapshot", "--out", str(snap), *common, env=env)
    assert code == 0 and "6 orders, 2 pools" in err
    code, out, _ = await _run_thread(capsys, "match", "--market", str(snap), "--json")
    offline = json.loads(out)
    assert code == 0 and offline["stats"]["orders"] == 6
    code, out, _ = await _run_thread(capsys, "round", "run", "--json", *common, env=env)
    rnd = json.loads(out)
    assert code == 0 and rnd["status"] == "completed" and rnd["trigger"] == "cli"
    assert rnd["disclosure"] == "full" and len(rnd["contract_ids"]) == rnd["contracts"]  # the operator's view
    assert rnd["matched_devices"] == offline["stats"]["matched_devices"]  # the replay cleared the same market


async def _run_thread(capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None) -> Any:
    """Run the CLI (which calls asyncio.run) in a worker thread, outside the test's event loop."""
    import asyncio
    import os

    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        code = await asyncio.to_thread(main, list(argv))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out, err = capsys.readouterr()
    return code, out, err
