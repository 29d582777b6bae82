"""Whole clearing rounds (snapshot, solve, commit) in a child process with its own event loop and pool.

Why: under API load a round that runs on the server's event loop waits behind every request handler at
each database await (its snapshot and commit took 5-10x their idle time with 100 clients on PostgreSQL),
and its CPU work (building and signing contracts) delays requests in turn. In a process of its own the
round's awaits return as soon as the database answers, and the operating system shares the cores
between the round and the requests instead of one event loop interleaving them.

The child (spawn context: no inherited connections, locks or loop) builds the same services from the same
settings and runs `RoundService.run_round` there, solving inline (it has nothing else to do). Rounds stay
serialized across processes by the round lock, which the child takes (round_lock.py); fencing tokens cross
as plain data. Only data crosses the boundary: the trigger, the fence, the routed orders in, the
`RoundSummary` or the domain error out. The child exits with its parent (PR_SET_PDEATHSIG on Linux, and a
watch thread), so a `kill -9` of the server leaves no round running on its own; PostgreSQL rolls back its
open transaction and drops its advisory lock with its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from exchange.services.child_process import ChildProcess, die_with_parent
from exchange.services.solver import clear_inline

if TYPE_CHECKING:
    from exchange.composition import Services
    from exchange.services.lease import Fence
    from exchange.services.rounds import RoundSummary, Routed
    from exchange.settings import Settings

log = logging.getLogger("hetex.rounds.worker")

#: the round worker runs at this niceness: a round is batch work with a period of a minute, requests wait for an
#: answer, so where both want the cores the scheduler gives the serving processes about three times the round's share
ROUND_WORKER_NICE = 5

_LOOP: asyncio.AbstractEventLoop | None = None
_SERVICES: Services | None = None


class InlineSolver:
    """The solver of a round that already runs off the API's event loop: clear in this process."""

    async def warm(self) -> None:
        """Nothing to start."""

    async def clear(self, market: Any, *, method: str, time_limit: float) -> tuple[str, Any]:
        """Clear `market` here (the child's loop has no other work)."""
        return clear_inline(market, method, time_limit)

    def kill(self) -> None:
        """Nothing runs apart from the caller."""

    def close(self) -> None:
        """Nothing to stop."""


def _init(settings: Settings, parent_pid: int, log_level: int) -> None:
    """Child initializer: follow the parent's life, log like it, build the services and load the key."""
    global _LOOP, _SERVICES
    die_with_parent(parent_pid)
    with contextlib.suppress(OSError):
        os.nice(ROUND_WORKER_NICE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s [round worker] %(message)s")
    from exchange.composition import build_services

    _LOOP = asyncio.new_event_loop()
    asyncio.set_event_loop(_LOOP)
    services = _LOOP.run_until_complete(build_services(settings))
    services.rounds.solver = InlineSolver()  # type: ignore[assignment]
    _LOOP.run_until_complete(services.identity.load())
    _SERVICES = services


def in_worker() -> bool:
    """True in a round worker process (its services are built)."""
    return _SERVICES is not None


def _ready() -> int:
    """Child side: services built (by the initializer), the solver imported and one snapshot read (database
    connection open, statements compiled), so the first round pays none of it; the child's pid."""
    import matching.clearing  # noqa: F401

    assert _LOOP is not None and _SERVICES is not None, "round worker not initialized"
    try:
        _LOOP.run_until_complete(_SERVICES.rounds.market_snapshot())
    except Exception as exc:  # a warm-up only: the round reports any real problem
        log.warning("round worker warm-up snapshot failed: %s", exc)
    return os.getpid()


def _close_child() -> None:
    """Child side: close the services (database pools: aiosqlite's connection threads would keep the
    child from exiting) before the executor stops it."""
    global _SERVICES
    if _LOOP is not None and _SERVICES is not None:
        services, _SERVICES = _SERVICES, None
        _LOOP.run_until_complete(services.close())


def _run(trigger: str, fence: Fence | None, routed: Mapping[str, Routed] | None) -> RoundSummary:
    """Child side: one whole round on the child's loop."""
    assert _LOOP is not None and _SERVICES is not None, "round worker not initialized"
    return _LOOP.run_until_complete(_SERVICES.rounds.run_round(trigger, fence, routed=routed))


class RoundWorker(ChildProcess):
    """The server side: one child process that runs this server's clearing rounds, one at a time."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def initializer(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        """Build the services in the child from this server's settings."""
        return _init, (self.settings, os.getpid(), logging.getLogger().getEffectiveLevel())

    async def warm(self) -> None:
        """Start the child now (services built, key loaded, solver imported), so the first round pays none."""
        pid = await asyncio.wrap_future(self.submit(_ready))
        log.info("round worker process %d ready", pid)

    async def run(self, trigger: str, fence: Fence | None, routed: Mapping[str, Routed] | None) -> RoundSummary:
        """Run one round in the child; its summary, or the domain error it raised (re-raised here)."""
        try:
            return await asyncio.wrap_future(self.submit(_run, trigger, fence, routed))
        except BrokenProcessPool:
            self.discard()
            raise

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Shut the child down: close its pools, let it exit, kill it if it has not within the grace."""
        processes, pool = self.processes(), self._pool
        self._pool = None
        if pool is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.wrap_future(pool.submit(_close_child)), grace_seconds)
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace_seconds
        for proc in processes:
            await asyncio.to_thread(proc.join, max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("round worker process %s did not exit within %ss: killed", proc.pid, grace_seconds)
                proc.kill()
