"""Free capacity counts contracts and unexpired holds as reservations (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.services.federation.wire import ForwardedOrder
from exchange.services.federation_capacity import (
    Shape,
    Tranche,
    choose,
    free_tranches,
    lock_capacity,
    refusal_field,
    summarize,
)
from exchange.storage.contracts import Contract
from exchange.storage.federation import FederationHold, FederationHoldLine, Peer
from identifiers.errors import ValidationError
from identifiers.ids import new_id_str
from tests.federation import fedkit

H100 = "NV-H100-SXM"
#: a minimal order_offer order (what a peer forwards)
FORWARDED: dict[str, Any] = {
    "origin_order_id": "o-1",
    "buyer_id": "b-1",
    "limits": {H100: 3000},
    "devices_max": 8,
    "devices_min": 1,
    "start_at": 0,
    "end_at": 3600,
}


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


def tranche(
    ask: int, devices: int, model: str = H100, region: str = "CN-NM", pool: str = "p", site: str = "s"
) -> Tranche:
    return Tranche(pool, f"CRI-{pool}", f"o-{pool}-{ask}", "prov", region, model, ask, devices, ("per_minute",), 60,
                   site_id=site)  # fmt: skip


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


def pick(tranches: list[Tranche], want: int, floor: int | None = None, shape: Shape | None = None,
         limit: int = 10_000) -> list[tuple[Tranche, int]]:  # fmt: skip
    """choose() with permissive terms and the given shape."""
    return choose(tranches, devices_max=want, devices_min=want if floor is None else floor, limits={"*": limit},
                  models=None, regions=None, billing_mode="per_minute", duration=3600, shape=shape)  # fmt: skip


def used(picks: list[tuple[Tranche, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t, n in picks:
        out[t.pool_id] = out.get(t.pool_id, 0) + n
    return out


def test_max_pools_caps_the_pools_used() -> None:
    ts = [tranche(1000, 2, pool="a"), tranche(1100, 2, pool="b"), tranche(1200, 8, pool="c")]
    assert used(pick(ts, 8)) == {"a": 2, "b": 2, "c": 4}  # no cap: cheapest first
    # cap 1: cheapest-first cannot reach 8 on one pool; the largest pool can
    assert used(pick(ts, 8, shape=Shape(max_pools=1))) == {"c": 8}
    assert used(pick(ts, 4, shape=Shape(max_pools=2))) == {"a": 2, "b": 2}
    assert pick(ts, 9, shape=Shape(max_pools=1)) == []
    fields = dict(devices_max=9, devices_min=9, limits={"*": 10_000}, models=None, regions=None,
                  billing_mode="per_minute", duration=3600)  # fmt: skip
    assert refusal_field(ts, shape=Shape(max_pools=1), **fields) == "max_pools"  # type: ignore[arg-type]
    # a partial order takes what one pool gives
    assert used(pick(ts, 9, floor=1, shape=Shape(max_pools=1))) == {"c": 8}


def test_same_model_keeps_one_model() -> None:
    ts = [tranche(1000, 3, model=H100, pool="a"), tranche(900, 3, model="HW-910B3", pool="b"),
          tranche(1500, 4, model=H100, pool="c")]  # fmt: skip
    assert {t.model for t, _n in pick(ts, 6)} == {H100, "HW-910B3"}
    picks = pick(ts, 6, shape=Shape(same_model=True))
    assert {t.model for t, _n in picks} == {H100} and sum(n for _t, n in picks) == 6
    # both models can give 3: the cheaper group wins
    picks = pick(ts, 3, shape=Shape(same_model=True))
    assert used(picks) == {"b": 3}
    assert pick(ts, 8, shape=Shape(same_model=True)) == []
    fields = dict(devices_max=8, devices_min=8, limits={"*": 10_000}, models=None, regions=None,
                  billing_mode="per_minute", duration=3600)  # fmt: skip
    assert refusal_field(ts, shape=Shape(same_model=True), **fields) == "same_model"  # type: ignore[arg-type]


def test_colocation_site_and_region() -> None:
    ts = [
        tranche(1000, 2, region="CN-NM", pool="a", site="s1"),
        tranche(1100, 2, region="CN-NM", pool="b", site="s2"),
        tranche(1200, 3, region="CN-GZ", pool="c", site="s3"),
        tranche(1300, 1, region="CN-GZ", pool="d", site="s3"),
    ]
    assert used(pick(ts, 4, shape=Shape(colocation="region"))) == {"a": 2, "b": 2}
    assert used(pick(ts, 4, shape=Shape(colocation="site"))) == {"c": 3, "d": 1}
    picks = pick(ts, 5, shape=Shape(colocation="region"))
    assert picks == []
    fields = dict(devices_max=5, devices_min=5, limits={"*": 10_000}, models=None, regions=None,
                  billing_mode="per_minute", duration=3600)  # fmt: skip
    assert refusal_field(ts, shape=Shape(colocation="region"), **fields) == "colocation"  # type: ignore[arg-type]
    # not enough anywhere: no field to blame
    fields["devices_max"] = fields["devices_min"] = 50
    assert refusal_field(ts, shape=Shape(colocation="region"), **fields) is None  # type: ignore[arg-type]


def test_quantity_scu_is_converted_per_model_with_the_catalogue_scu() -> None:
    scu = {H100: Decimal("3.2"), "HW-910B3": Decimal("1.25"), "XX-NOSCU": None}
    ts = [tranche(3000, 4, model=H100, pool="a"), tranche(1000, 16, model="HW-910B3", pool="b"),
          tranche(100, 50, model="XX-NOSCU", pool="c")]  # fmt: skip
    # 10 SCU: 4 x H100 = 12.8 (ceil(10/3.2)=4) or 8 x 910B3 = 10; both full, the cheaper (8 x 1000) wins
    picks = pick(ts, 1000, shape=Shape(quantity_scu=Decimal(10), scu=scu))
    assert used(picks) == {"b": 8}
    # 20 SCU: only the 910B3 pool can give it all (16 x 1.25 = 20); one model, never the model without SCU
    assert used(pick(ts, 1000, shape=Shape(quantity_scu=Decimal(20), scu=scu))) == {"b": 16}
    # devices_max still caps devices; scu_min lets a partial hold through
    assert pick(ts, 4, shape=Shape(quantity_scu=Decimal(20), scu=scu)) == []
    assert used(pick(ts, 4, shape=Shape(quantity_scu=Decimal(20), scu_min=Decimal(12), scu=scu))) == {"a": 4}
    fields = dict(devices_max=100, devices_min=1, limits={"*": 10_000}, models=["XX-NOSCU"], regions=None,
                  billing_mode="per_minute", duration=3600)  # fmt: skip
    shape = Shape(quantity_scu=Decimal(5), scu=scu)
    assert pick([ts[2]], 100, floor=1, shape=shape) == []
    assert refusal_field(ts, shape=shape, **fields) == "quantity_scu"  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.integers(1, 3000), st.integers(1, 8), st.sampled_from([H100, "HW-910B3"]),
                  st.sampled_from(["CN-NM", "CN-GZ"]), st.integers(0, 3)),
        min_size=0, max_size=10,
    ),
    want=st.integers(1, 30),
    max_pools=st.none() | st.integers(1, 4),
    same_model=st.booleans(),
    colocation=st.sampled_from(["any", "site", "region"]),
)  # fmt: skip
def test_choose_respects_the_shape(
    items: list[tuple[int, int, str, str, int]], want: int, max_pools: int | None, same_model: bool, colocation: str
) -> None:
    ts = [tranche(a, n, model=m, region=r, pool=f"p{i}", site=f"{r}-s{s}") for i, (a, n, m, r, s) in enumerate(items)]
    shape = Shape(max_pools=max_pools, same_model=same_model, colocation=colocation)
    picks = pick(ts, want, floor=1, shape=shape)
    pools = used(picks)
    assert sum(pools.values()) <= want
    assert all(n <= t.devices for t, n in picks)
    if max_pools is not None:
        assert len(pools) <= max_pools
    if same_model:
        assert len({t.model for t, _n in picks}) <= 1
    if colocation == "site":
        assert len({t.site_id for t, _n in picks}) <= 1
    if colocation == "region":
        assert len({t.region for t, _n in picks}) <= 1
    # something is always found when any tranche exists (partial fill allowed)
    assert bool(picks) == bool(ts)


@pytest.mark.parametrize(
    "bad", ["\u0661\u0662", " 12 ", "1e3", "+12", "-1", "0", "0.0", "NaN", "Infinity", "1000000001", "1.23456"]
)
@pytest.mark.parametrize("name", ["quantity_scu", "scu_min"])
def test_a_peer_scu_figure_follows_the_api_decimal_rule(bad: str, name: str) -> None:
    """A verified peer's SCU figures are parsed like the API's quantity_scu (ASCII digits, <= 12.4, > 0,
    <= 10^9): Decimal() alone would take Arabic-Indic digits, spaces, signs, exponents and NaN."""
    order = ForwardedOrder(**{**FORWARDED, name: bad})
    with pytest.raises(ValidationError) as err:
        order.shape({"NV-H100-SXM": Decimal(3)})
    assert err.value.field == f"body.order.{name}"


def test_a_peer_scu_figure_in_ascii_digits_is_read_exactly() -> None:
    shape = ForwardedOrder(**{**FORWARDED, "quantity_scu": "12.5", "scu_min": "2"}).shape({})
    assert shape.quantity_scu == Decimal("12.5") and shape.scu_min == Decimal(2)
