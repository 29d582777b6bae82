"""The singleton duties of `hetex serve` and the lease that runs them in exactly one process at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from exchange.api.keys import SERVICES
from exchange.composition import Services
from exchange.services.lease import Fence
from exchange.services.round_lock import RoundBusyError
from exchange.services.rounds import RoundsStoppingError

log = logging.getLogger("hetex.duties")

ROUND_SWEEP_SECONDS = 5.0


def register_duties(svc: Services) -> None:
    """The timed work of an exchange: checkpoints, periodic rounds, round and export recovery."""
    settings = svc.settings
    if settings.checkpoint_interval_seconds > 0:
        interval = settings.checkpoint_interval_seconds
        svc.lease.add_duty("checkpoints", lambda fence, stop: svc.ledger.run_publisher(interval, stop, fence))
    if settings.round_interval_seconds > 0:
        svc.lease.add_duty("rounds", lambda fence, stop: periodic_rounds(svc, fence, stop))
    if not svc.lease.is_local:  # several processes may share the database: recover what a dead one left
        svc.lease.add_duty("round-sweep", lambda fence, stop: round_sweep(svc, fence, stop))
        svc.lease.add_duty("export-resume", lambda _fence, stop: svc.audit.run_resumer(stop))


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `stop` is set first; True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def periodic_rounds(svc: Services, fence: Fence | None, stop: asyncio.Event) -> None:
    """Run a round every `round_interval_seconds` (fenced); a failed round is logged, the next runs."""
    interval = svc.settings.round_interval_seconds
    while not await _wait(stop, interval):
        try:
            await svc.rounds.run_round("interval", fence)
        except RoundBusyError:
            log.info("periodic round skipped: another round holds the lock")
        except RoundsStoppingError:
            return
        except Exception:
            log.exception("periodic clearing round failed; the next one runs in %ss", interval)


async def round_sweep(svc: Services, fence: Fence | None, stop: asyncio.Event) -> None:
    """At takeover and every few seconds: rounds a dead process left `running` are marked abandoned."""
    while True:
        try:
            await svc.rounds.sweep_abandoned(fence)
        except Exception:
            log.exception("sweeping abandoned rounds failed; retrying")
        if await _wait(stop, ROUND_SWEEP_SECONDS):
            return


async def lease_keeper(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: compete for the duties lease while serving; on shutdown stop the duties, release it."""
    svc = app[SERVICES]
    task = asyncio.create_task(svc.lease.run(), name="hetex-lease")
    svc.lease.task = task
    yield
    await svc.lease.shutdown()
