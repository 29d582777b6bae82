"""The clearing solve in a separate process, so a round never competes with the API's event loop.

`matching` is pure: the worker gets the market (a frozen dataclass, pickled) and returns the snapshot's
hash and the clearing result, so nothing but data crosses the process boundary. One worker process (spawn
context: no inherited database connections, locks or event loop) serves every round of this exchange
process; it is started on first use or by `warm()`, and replaced if it dies. `kill()` stops a solve in
flight (graceful shutdown abandons the round that waits for it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from concurrent.futures.process import BrokenProcessPool

from exchange.services.child_process import ChildProcess
from matching.model import ClearingResult, Market

log = logging.getLogger("hetex.solver")


def clear_inline(market: Market, method: str, time_limit: float) -> tuple[str, ClearingResult]:
    """In this process: the SHA-256 of the market's JSON form (what the round cleared) and its clearing result.
    Serializing and hashing the snapshot here keeps that work off the exchange's event loop as well."""
    from matching.clearing import clear

    return market_digest(market), clear(market, method=method, time_limit=time_limit)


def market_digest(market: Market) -> str:
    """SHA-256 of the snapshot's JSON form: names exactly what the round cleared."""
    return hashlib.sha256(market.to_json().encode()).hexdigest()


def _ready() -> bool:
    """Worker side: import the solver once, so the first round does not pay for it."""
    import matching.clearing  # noqa: F401

    return True


class SolverPool(ChildProcess):
    """One solver worker process, shared by the rounds of this exchange process."""

    async def warm(self) -> None:
        """Start the worker and import the solver in it."""
        await asyncio.wrap_future(self.submit(_ready))

    async def clear(self, market: Market, *, method: str, time_limit: float) -> tuple[str, ClearingResult]:
        """Clear `market` in the worker process (the event loop stays free meanwhile): the snapshot's
        SHA-256 (over its JSON form) and the result. Market and result cross as pickled frozen dataclasses."""
        try:
            return await asyncio.wrap_future(self.submit(clear_inline, market, method, time_limit))
        except BrokenProcessPool:
            self.discard()
            raise

    def close(self) -> None:
        """Shut the worker down (waits for it to exit)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


SOLVERS = SolverPool()
