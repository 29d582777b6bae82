"""Crash test: a settlement batch killed mid-way (HETEX_TEST_CRASH_AFTER, os._exit inside the open
transaction) leaves none of the batch behind, and the log stays consistent with the last checkpoint;
the next run then writes the whole batch. Runs `python -m exchange settle run` in a subprocess against a
fresh database, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

from exchange.services.settlement import CRASH_ENV, CRASH_EXIT_CODE
from exchange.storage.settlement import SettlementBatch, SettlementRecord, UsageReport
from federation.merkle import verify_consistency
from tests.exchange.registration_support import make_api
from tests.exchange.settlement_support import make_market

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DAY = 86400


def settle_subprocess(url: str, key_dir: Path, crash_after: int | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETEX_")}
    if crash_after is not None:
        env[CRASH_ENV] = str(crash_after)
    return subprocess.run(
        [sys.executable, "-m", "exchange", "settle", "run", "--database-url", url, "--key-dir", str(key_dir), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def counts(svc: Any) -> tuple[int, int, int]:
    async with svc.sessions() as s:
        records = await s.scalar(select(func.count()).select_from(SettlementRecord))
        batches = await s.scalar(select(func.count()).select_from(SettlementBatch))
        linked = await s.scalar(select(func.count()).where(UsageReport.settlement_id.is_not(None)))
        return int(records or 0), int(batches or 0), int(linked or 0)


async def test_killed_batch_leaves_all_or_nothing(fresh_db_factory: Any, aiohttp_client: Any, tmp_path: Path) -> None:
    url = fresh_db_factory()
    key_dir = tmp_path / "keys"
    api = await make_api(SimpleNamespace(url=url, sessions=None), aiohttp_client, tmp_path)
    now = int(time.time())
    market = await make_market(api, clock_at=now - 20 * DAY)
    for i in range(6):
        start = now - (20 - i) * DAY
        c = await market.contract("per_minute", devices=2, start=start, end=start + 3600, buyer_price_fen=1000 + i)
        await market.provider.request("POST", f"/v1/contracts/{c['id']}/confirm")
        market.clock.now = start + 3600
        await market.usage(c["id"], "m1", 1, start, start + 3600, 60 + i)
    svc = api.svc
    before = await svc.ledger.checkpoint()
    assert await counts(svc) == (0, 0, 0)

    crashed = settle_subprocess(url, key_dir, crash_after=3)
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr
    assert await counts(svc) == (0, 0, 0)  # none of the batch
    assert await svc.ledger.size() == before.size
    report = await svc.ledger.verify_log(earlier=[before.note])
    assert report.ok, [p.describe() for p in report.problems]

    done = settle_subprocess(url, key_dir, crash_after=None)
    assert done.returncode == 0, done.stderr
    assert await counts(svc) == (6, 1, 6)  # the whole batch: 6 records, their usage linked
    after = await svc.ledger.checkpoint()
    assert after.size == before.size + 6
    proof = await svc.ledger.consistency_proof(before.size, after.size)
    verify_consistency(before.size, after.size, proof.hashes, before.root, after.root)
    report = await svc.ledger.verify_log(earlier=[before.note, after.note])
    assert report.ok, [p.describe() for p in report.problems]
    await svc.close()
