"""The clearing solve in its own process (exchange/services/solver.py): the same result as clearing in
this process, from data only (pickled frozen dataclasses); a worker killed mid-solve fails that solve and
the next one still runs."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
from concurrent.futures.process import BrokenProcessPool

import pytest

from exchange.services.rounds import snapshot_hash
from exchange.services.solver import SolverPool, clear_inline
from matching.clearing import clear
from matching.generators import generate
from matching.model import ClearingResult


def timeless(result: ClearingResult) -> ClearingResult:
    """The result without its measured times (they differ run to run)."""
    stats = dataclasses.replace(result.stats, build_seconds=0.0, solve_seconds=0.0, price_seconds=0.0)
    return dataclasses.replace(result, stats=stats)


async def test_worker_process_clears_like_this_process() -> None:
    market = generate("scale", orders=300, pools=20, seed=3)
    pool = SolverPool()
    try:
        await pool.warm()
        worker_pids = set(getattr(pool._executor(), "_processes", {}))
        assert worker_pids and os.getpid() not in worker_pids  # a separate process
        digest, remote = await pool.clear(market, method="mcf", time_limit=10)
    finally:
        pool.close()
    local = clear(market, method="mcf", time_limit=10)
    assert remote.allocations and timeless(remote).to_json() == timeless(local).to_json()
    assert digest == snapshot_hash(market)


def test_worker_entry_returns_the_snapshot_hash_and_a_picklable_result() -> None:
    market = generate("scale", orders=50, pools=5, seed=1)
    digest, out = pickle.loads(pickle.dumps(clear_inline(pickle.loads(pickle.dumps(market)), "mcf", 5.0)))
    assert digest == snapshot_hash(market)
    assert timeless(out).to_json() == timeless(clear(market, method="mcf", time_limit=5.0)).to_json()


async def test_a_killed_worker_fails_its_solve_and_the_next_solve_runs() -> None:
    market = generate("scale", orders=3000, pools=60, seed=5)
    pool = SolverPool()
    try:
        await pool.warm()
        solving = asyncio.create_task(pool.clear(market, method="mcf", time_limit=30))
        await asyncio.sleep(0.2)
        pool.kill()
        with pytest.raises((BrokenProcessPool, asyncio.CancelledError)):  # running, or still queued
            await solving
        small = generate("scale", orders=50, pools=5, seed=1)
        assert (await pool.clear(small, method="mcf", time_limit=5))[1].allocations
    finally:
        pool.close()
