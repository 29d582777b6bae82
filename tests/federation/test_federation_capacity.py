"""Free capacity counts contracts and unexpired holds as reservations (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.services.federation_capacity import Tranche, choose, free_tranches, lock_capacity, summarize
from exchange.storage.contracts import Contract
from exchange.storage.federation import FederationHold, FederationHoldLine, Peer
from identifiers.ids import new_id_str
from tests.federation import fedkit

H100 = "NV-H100-SXM"


async def test_holds_and_contracts_reserve_until_expiry(db: Any) -> None:
    now = int(time.time())
    async with db.sessions.begin() as s:
        pool = await s.run_sync(
            lambda ss: fedkit.seed_pool(ss, "HX", region="CN-NM", model=H100, devices=10, ask_fen=2000)
        )
        buyer = await s.run_sync(fedkit.seed_buyer)
        order = await s.run_sync(lambda ss: fedkit.seed_order(ss, buyer, devices=1, models=[H100], limit_fen=1))
        s.add(Peer(authority="ZZ", url="http://127.0.0.1:1", origin="zz/log", public_key="k" * 44, key_id="abcd0123"))
        s.add(
            Contract(
                id=new_id_str(), order_id=order, pool_id=pool.pool_id, buyer_id=buyer, provider_id=pool.provider_id,
                model=H100, region="CN-NM", devices=3, start_at=now, end_at=now + 3600, buyer_price_fen=1,
                provider_price_fen=1, fee_bps=0, billing_mode="per_minute", billing_terms={}, status="pending",
            )
        )  # fmt: skip
        await s.flush()
        for hold_id, expires in (("h-live", now + 30), ("h-old", now - 1)):
            s.add(FederationHold(id=hold_id, origin_authority="ZZ", message_id=hold_id, order_id=order, status="held",
                                 devices=2, start_at=now, end_at=now + 3600, expires_at=expires))  # fmt: skip
            await s.flush()
            s.add(FederationHoldLine(contract_id=f"c-{hold_id}", hold_id=hold_id, pool_id=pool.pool_id,
                                     offer_id=pool.offer_id, devices=2, start_at=now, end_at=now + 3600, price_fen=2000,
                                     body={}))  # fmt: skip
    async with db.sessions.begin() as s:
        await lock_capacity(s)
        tranches = await free_tranches(s, start=now, end=now + 600, now=now, heartbeat_timeout=900)
        later = await free_tranches(s, start=now + 7200, end=now + 7800, now=now, heartbeat_timeout=900)
        other_model = await free_tranches(
            s, start=now, end=now + 600, now=now, heartbeat_timeout=900, models=["HW-910B3"]
        )
    assert [t.devices for t in tranches] == [10 - 3 - 2]  # the expired hold reserves nothing
    assert [t.devices for t in later] == [10]  # nothing overlaps two hours later
    assert other_model == []
    (cls,) = summarize(tranches)
    assert (cls.free_devices, cls.max_pool_free, cls.ask_ladder) == (5, 5, ((2000, 5),))


def tranche(ask: int, devices: int, model: str = H100, region: str = "CN-NM", pool: str = "p") -> Tranche:
    return Tranche(pool, f"CRI-{pool}", f"o-{pool}-{ask}", "prov", region, model, ask, devices, ("per_minute",), 60)


@settings(max_examples=60, deadline=None)
@given(
    asks=st.lists(st.tuples(st.integers(1, 5000), st.integers(1, 16)), min_size=0, max_size=8),
    want=st.integers(1, 40),
    floor=st.integers(1, 40),
    limit=st.integers(1, 5000),
)
def test_choose_never_exceeds_and_respects_limit_and_minimum(
    asks: list[tuple[int, int]], want: int, floor: int, limit: int
) -> None:
    tranches = [tranche(a, n, pool=f"p{i}") for i, (a, n) in enumerate(asks)]
    picks = choose(tranches, devices_max=want, devices_min=min(floor, want), limits={"*": limit}, models=None,
                   regions=None, billing_mode="per_minute", duration=3600)  # fmt: skip
    total = sum(n for _t, n in picks)
    affordable = sum(n for a, n in asks if a <= limit)
    assert total <= want and all(t.ask_fen <= limit and n <= t.devices for t, n in picks)
    if picks:
        assert total >= min(floor, want)
    else:
        assert affordable < min(floor, want)
    assert total == (min(want, affordable) if picks else 0)
