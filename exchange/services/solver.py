"""The clearing solve in a separate process, so a round never competes with the API's event loop.

`matching` is pure: the worker gets the market as its JSON form and returns the result as JSON (both
validated on the way in), so nothing but data crosses the process boundary. One worker process (spawn
context: no inherited database connections, locks or event loop) serves every round of this exchange
process; it is started on first use or by `warm()`, and replaced if it dies. `kill()` stops a solve in
flight (graceful shutdown abandons the round that waits for it).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from matching.model import ClearingResult, Market

log = logging.getLogger("hetex.solver")


def _clear_json(market_json: str, method: str, time_limit: float) -> str:
    """Worker side: clear one market given as JSON; the result as JSON."""
    from matching.clearing import clear

    return clear(Market.from_json(market_json), method=method, time_limit=time_limit).to_json()


def _ready() -> bool:
    """Worker side: import the solver once, so the first round does not pay for it."""
    import matching.clearing  # noqa: F401

    return True


class SolverPool:
    """One solver worker process, shared by the rounds of this exchange process."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    async def warm(self) -> None:
        """Start the worker and import the solver in it."""
        await asyncio.wrap_future(self._executor().submit(_ready))

    async def clear(self, market: Market, *, method: str, time_limit: float) -> ClearingResult:
        """Clear `market` in the worker process (the event loop stays free meanwhile)."""
        payload = market.to_json()
        try:
            out = await asyncio.wrap_future(self._executor().submit(_clear_json, payload, method, time_limit))
        except BrokenProcessPool:
            self._discard()
            raise
        return ClearingResult.from_json(out)

    def kill(self) -> None:
        """Stop the worker now (a solve in flight fails with BrokenProcessPool); the next use starts another."""
        pool = self._pool
        if pool is None:
            return
        processes = getattr(pool, "_processes", None) or {}
        for proc in list(processes.values()):
            proc.kill()
        self._discard()

    def _discard(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Shut the worker down (waits for it to exit)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


SOLVERS = SolverPool()
