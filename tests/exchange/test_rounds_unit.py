"""Pure parts of clearing rounds: snapshot mapping of orders and offers, the capacity sweep, the file lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.services.round_lock import RoundBusyError, RoundLock, sqlite_lock_path
from exchange.services.rounds import Plan, Recheck, peak
from exchange.services.snapshot import (
    ContractRow,
    OfferRow,
    OrderRow,
    build_snapshot,
    choose_slot,
    clearing_now,
    market_order,
    market_pool,
)
from exchange.storage.engine import make_engine
from identifiers.catalogue import load_catalogue
from identifiers.regions import load_regions
from matching.model import Market

CAT = load_catalogue()
REGIONS = load_regions()
NOW = 1_800_000_000


def order_row(spec: dict, *, quantity: int | None = 4, filled: int = 0, oid: str = "o1") -> OrderRow:
    return OrderRow(
        order_id=oid,
        buyer_id="b1",
        status="open" if filled == 0 else "partially_filled",
        spec=spec,
        quantity_devices=quantity,
        filled_devices=filled,
        updated_at=1,
        created_at=1,
        home_region="CN-SH",
    )


def offer_row(oid: str, pool: str = "p1", devices: int = 8, model: str = "NV-H100-SXM") -> OfferRow:
    return OfferRow(
        offer_id=oid,
        offer_version=1,
        provider_id="prov",
        pool_id=pool,
        pool_devices=16,
        site_id="s1",
        region="CN-NM",
        model=model,
        memory_gb=80,
        devices=devices,
        devices_per_node=8,
        window_start=NOW - 3600,
        window_end=None,
        min_lease_seconds=0,
        ask_fen=1000,
        billing_modes=("per_minute",),
    )


BASE_SPEC = {
    "quantity_devices": 4,
    "models": ["NV-H100-SXM"],
    "duration_seconds": 3600,
    "limit_fen_per_device_hour": {"*": 3000},
    "billing_mode": "per_minute",
    "all_or_nothing": True,
}


def test_clearing_now_is_next_slot_boundary() -> None:
    assert clearing_now(1000, 300) == 1200
    assert clearing_now(1200, 300) == 1200
    assert clearing_now(1201, 300) == 1500


def test_long_leases_get_a_coarser_slot() -> None:
    short = [order_row({**BASE_SPEC, "duration_seconds": 3600})]
    year = [order_row({**BASE_SPEC, "duration_seconds": 365 * 86400})]
    assert choose_slot(300, short, 1000, 4) == 300
    assert choose_slot(300, year, 10, 4) == 300  # few pools: the fine slot fits the budget
    slot = choose_slot(300, year, 5000, 4)
    assert slot > 300 and slot % 300 == 0
    assert (365 * 86400 // slot + 4) * 5000 <= 20_000_000


def test_star_limit_expands_to_every_acceptable_model() -> None:
    spec = {**BASE_SPEC, "models": None, "constraints": {"families": ["Hopper"]}}
    spec.pop("models")
    o = market_order(order_row(spec), 0, CAT)
    assert not isinstance(o, str)
    hopper = {m.code for m in CAT.models if m.family == "Hopper"}
    assert set(o.models) == hopper and set(o.limits) == hopper
    assert set(o.limits.values()) == {3000}
    assert o.home_region == "CN-SH"  # the buyer's registered home region when the order has none


def test_constraints_filter_models_by_memory_and_stack() -> None:
    spec = {**BASE_SPEC, "constraints": {"min_memory_gb": 90, "stack": ["CUDA"]}}
    spec.pop("models")
    o = market_order(order_row(spec), 0, CAT)
    assert not isinstance(o, str)
    for code in o.models:
        m = CAT.get(code)
        assert m.software_stack == "CUDA" and m.memory_gb is not None and m.memory_gb >= 90


def test_no_acceptable_model_is_skipped_with_a_reason() -> None:
    spec = {**BASE_SPEC, "constraints": {"min_memory_gb": 60000}}
    spec.pop("models")
    assert market_order(order_row(spec), 0, CAT) == "no_acceptable_model"


def test_partial_fill_takes_part_with_the_remainder() -> None:
    spec = {**BASE_SPEC, "all_or_nothing": False, "min_fill_devices": 3}
    o = market_order(order_row(spec, quantity=4, filled=2), 0, CAT)
    assert not isinstance(o, str)
    assert o.quantity_devices == 2 and o.min_fill_devices == 2
    assert market_order(order_row(spec, quantity=4, filled=4), 0, CAT) == "already_filled"


def test_snapshot_reservations_and_json_roundtrip() -> None:
    offers = [offer_row("a", devices=8), offer_row("b", pool="p2", devices=4)]
    contracts = [
        ContractRow("c1", "p1", "a", 3, NOW, NOW + 3600),  # on offer a
        ContractRow("c2", "p2", "gone", 2, NOW, NOW + 7200),  # pool p2, offer withdrawn: holds every offer of p2
    ]
    snap = build_snapshot(
        now=clearing_now(NOW, 300),
        offers=offers,
        orders=[order_row(BASE_SPEC)],
        contracts=contracts,
        catalogue=CAT,
        regions=REGIONS,
        slot_seconds=300,
        max_start_slots=4,
        fee_bps=100,
    )
    pools = {p.id: p for p in snap.market.pools}
    assert [r.devices for r in pools["a"].reserved] == [3]
    assert [r.devices for r in pools["b"].reserved] == [2]
    assert pools["a"].family == CAT.get("NV-H100-SXM").family
    again = Market.from_json(snap.market.to_json())
    assert again.to_json() == snap.market.to_json()
    assert "CN-SH" in snap.market.latency_ms and "CN-NM" in snap.market.latency_ms["CN-SH"]


def _brute_peak(intervals: list[tuple[int, int, int]], start: int, end: int) -> int:
    return max((sum(d for s, e, d in intervals if s <= t < e) for t in range(start, end)), default=0)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(1, 10), st.integers(1, 5)), max_size=8),
    st.integers(0, 30),
    st.integers(1, 10),
)
def test_peak_equals_brute_force(raw: list[tuple[int, int, int]], start: int, length: int) -> None:
    intervals = [(s, s + n, d) for s, n, d in raw]
    assert peak(intervals, start, start + length) == _brute_peak(intervals, start, start + length)


def test_recheck_counts_pool_and_offer_capacity() -> None:
    check = Recheck(pool_caps={"p": 8}, offer_caps={"a": 6, "b": 6})
    check.add("p", "a", 5, 0, 10)
    assert check.fits("p", "b", 3, 0, 10)
    assert not check.fits("p", "b", 4, 0, 10)  # pool would hold 9 > 8
    assert not check.fits("p", "a", 2, 5, 6)  # offer a would hold 7 > 6
    assert check.fits("p", "a", 2, 10, 20)  # after the first contract ends
    assert not check.fits("p", "b", 2, 0, 1, extra=[("p", "b", (0, 1, 2))])  # same order's earlier piece


def test_commit_keeps_the_prepared_verdict_only_while_nothing_it_read_changed() -> None:
    """The commit skips the capacity sweep for an order only if its rows and the capacity held on its pool
    and offer from outside the round are exactly what the prepare step checked."""
    from collections import namedtuple

    from matching.model import Allocation

    OfferR = namedtuple("OfferR", "id pool_id status devices")
    PoolR = namedtuple("PoolR", "id status devices")
    OrderR = namedtuple("OrderR", "id status filled_devices")

    def read(held: list[tuple[int, int, int]]) -> tuple[dict, dict, dict, Recheck]:
        offers = {"a": OfferR("a", "p", "open", 8)}
        pools = {"p": PoolR("p", "active", 8)}
        orders = {"o": OrderR("o", "open", 0)}
        check = Recheck(pool_caps={"p": 8}, offer_caps={"a": 8})
        for s, e, d in held:
            check.add("p", "a", d, s, e)
        check.freeze_base()
        return offers, pools, orders, check

    offers, pools, orders, seen = read([(0, 5, 2)])
    plan = Plan(key_id="k", stats={}, seen=(offers, pools, orders), seen_check=seen)
    pieces = [Allocation("o", "a", 4, 0, 10, 0, 0, 0, 0, 0)]
    now_o, now_p, now_r, now_c = read([(0, 5, 2)])
    now_c.add("p", "a", 1, 0, 10)  # the round's own earlier orders do not count as a change
    assert plan.unchanged("o", pieces, now_o, now_p, now_r, now_c)
    _o, _p, _r, held_more = read([(0, 5, 2), (3, 9, 6)])  # a hold landed on the pool after prepare
    assert not plan.unchanged("o", pieces, now_o, now_p, now_r, held_more)
    assert not plan.unchanged("o", pieces, {"a": OfferR("a", "p", "open", 6)}, now_p, now_r, now_c)
    assert not plan.unchanged("o", pieces, now_o, {"p": PoolR("p", "active", 7)}, now_r, now_c)
    assert not plan.unchanged("o", pieces, now_o, now_p, {"o": OrderR("o", "cancelled", 0)}, now_c)


def test_sqlite_lock_path() -> None:
    assert sqlite_lock_path("sqlite+aiosqlite:////tmp/x/hetex.db") == Path("/tmp/x/hetex.db.round.lock")
    assert sqlite_lock_path("sqlite+aiosqlite:///:memory:") is None


async def test_sqlite_round_lock_excludes_another_process(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    holder = textwrap.dedent(
        f"""
        import fcntl, os, sys, time
        fd = os.open({str(tmp_path / "h.db.round.lock")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(30)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        engine = make_engine(url)
        lock = RoundLock(engine, url)
        t = time.monotonic()
        with pytest.raises(RoundBusyError):
            async with lock.hold(0.3):
                pass
        assert time.monotonic() - t >= 0.3
        proc.kill()  # a killed holder releases the lock (the kernel drops its flock)
        proc.wait()
        async with lock.hold(5):
            pass
        await engine.dispose()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_single_node_order_and_node_shape_reach_the_snapshot() -> None:
    o = market_order(order_row({**BASE_SPEC, "quantity_devices": 8, "colocation": "node"}), 0, CAT)
    assert not isinstance(o, str)
    assert o.colocation == "node" and o.max_pools == 1
    p = market_pool(offer_row("o1", devices=12), [], CAT)
    assert p.devices_per_node == 8 and p.nodes == 2 and p.node_sizes() == [8, 4]


def test_single_node_order_spanning_pools_is_refused() -> None:
    import pydantic

    from exchange.services.orders import OrderSpec

    with pytest.raises(pydantic.ValidationError, match="max_pools must be 1"):
        OrderSpec.model_validate({**BASE_SPEC, "colocation": "node", "max_pools": 2})
    assert OrderSpec.model_validate({**BASE_SPEC, "colocation": "node"}).colocation == "node"
