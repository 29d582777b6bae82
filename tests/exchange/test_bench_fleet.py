"""`hetex bench fleet`: seeded sites heartbeat and report batched usage over HTTP while buyers order and a
round runs; every request kind is answered without errors and the figures add up."""

from __future__ import annotations

import json

import pytest

from exchange.cli.main import main


@pytest.mark.slow
def test_bench_fleet_small(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "fleet", "--sites", "6", "--interval", "2", "--usage-interval", "3", "--duration", "6"]
    code = main([*argv, "--round-interval", "4", "--order-rate", "1", "--meters", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    kinds = data["kinds"]
    assert kinds["heartbeat"]["completed"] >= 6 and kinds["heartbeat"]["errors"] == 0
    assert kinds["usage_batch"]["completed"] >= 1 and kinds["usage_batch"]["errors"] == 0
    assert kinds["order"]["completed"] >= 1 and kinds["order"]["errors"] == 0
    assert data["requests_completed"] == sum(k["completed"] for k in kinds.values())
    assert [r["status"] for r in data["rounds"]] == ["completed"]
    assert "fleet: seeding 6 sites" in captured.err
    assert data["heartbeats_presigned"] is True and data["warmup_seconds"] == 2 and data["warmup_errors"] == 0
    assert data["client_cpu_ms_per_request"] is not None


def test_slow_seconds_counts_slow_requests_by_the_second_they_started() -> None:
    from exchange.bench.fleet import Kind, _slow_seconds

    beat, batch = Kind(333.0), Kind(33.0)
    for at, seconds in [(100.2, 0.01), (100.7, 0.5), (101.1, 0.2), (101.9, 0.15), (103.0, 0.05), (105.5, 2.0)]:
        beat.record(seconds, True, started=at)
    batch.record(0.3, True, started=101.5)
    assert _slow_seconds([beat, batch], t_start=100.0) == [[0, 1], [1, 3], [5, 1]]
    assert _slow_seconds([beat, batch], t_start=100.0, top=1) == [[1, 3]]
