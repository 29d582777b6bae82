"""The public market cache: one computation shared by concurrent viewers, recomputed after its time or a clear."""

from __future__ import annotations

import asyncio

from exchange.web.cache import Ttl


async def test_concurrent_viewers_share_one_computation_and_it_expires() -> None:
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    cache: Ttl[int] = Ttl(0.2)
    assert await asyncio.gather(*(cache.get(compute) for _ in range(10))) == [1] * 10
    assert await cache.get(compute) == 1
    await asyncio.sleep(0.25)
    assert await cache.get(compute) == 2
    cache.clear()
    assert await cache.get(compute) == 3 and calls == 3
