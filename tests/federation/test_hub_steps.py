"""A coupled member's restricted local round is narrowed to the ladder steps the hub routed its own orders
to, and to the devices it routed there (specs/federation.md 9.3): it no longer takes a cheaper step the
hub gave a remote order whose hold has not arrived yet."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from exchange.services.rounds import Routed, restrict_to_routes
from exchange.storage.contracts import Contract
from exchange.storage.registration import Offer
from matching.federated import clear_hub, curves_of
from matching.model import Market, Order, Pool, Reservation
from tests.federation import fedkit

T0 = 1_767_225_600
H = 3600
H100 = "NV-H100-SXM"


def _pool(pid: str, devices: int, ask: int, reserved: tuple[Reservation, ...] = ()) -> Pool:
    return Pool(pid, "S", "CN-NM", "A", "f", 64, Decimal(1), "S", False, devices, devices, ask, reserved=reserved)


def test_hub_routes_name_the_devices_on_each_ladder_step() -> None:
    curves = curves_of("X2", [_pool("P1", 4, 1000), _pool("P2", 4, 2000)], T0, H, 4)
    order = Order("O", "b", 0, quantity_devices=6, models=("A",), limits={"A": 3000}, max_pools=4, same_model=False)
    (route,) = clear_hub(curves, [order], {"O": "X1"}, T0)[0]
    assert route.asks == (1000, 2000) and route.steps == ((1000, 4), (2000, 2))


def test_restricted_round_sees_only_the_routed_steps_and_devices() -> None:
    pools = (
        _pool("cheap", 4, 1000),
        _pool("dear-1", 3, 2000, (Reservation(1, T0, T0 + H),)),  # 2 free in the first slot
        _pool("dear-2", 4, 2000),
        _pool("other", 4, 3000),
    )
    local = Order("L", "b", 0, quantity_devices=3, models=("A",), limits={"A": 2500})
    remote = Order("R", "b", 1, quantity_devices=4, models=("A",), limits={"A": 1500})
    market = Market(now=T0, pools=pools, orders=(local, remote))
    routed = {"L": Routed(("A",), ("CN-NM",), ((("CN-NM", "A", 2000), 3),))}
    got = restrict_to_routes(market, routed)
    assert [o.id for o in got.orders] == ["L"]
    # only the 2000 step, and on it only the 3 devices routed to L: dear-1's 2 free, then 1 of dear-2
    free = {p.id: p.devices - sum(r.devices for r in p.reserved if r.start < T0 + H and r.end > T0) for p in got.pools}
    assert free == {"dear-1": 2, "dear-2": 1}
    # without steps (an older hub), only the orders are narrowed, as before
    legacy = restrict_to_routes(market, {"L": Routed(("A",), ("CN-NM",))})
    assert [p.id for p in legacy.pools] == [p.id for p in pools]


async def test_coupled_member_leaves_the_step_routed_to_a_remote_order(tmp_path: Path) -> None:
    async with fedkit.hub_fabric(tmp_path, ["A", "B"], federation_hub_coupled=True) as (h, members):
        a, b = members
        with a.seed() as s:
            cheap = fedkit.seed_pool(s, "A", region="CN-SH", model=H100, devices=6, ask_fen=1000)
            dear = fedkit.seed_pool(s, "A", region="CN-SH", model=H100, devices=4, ask_fen=2000, operator="PR2")
            local = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=4, models=[H100], limit_fen=2500)
        with b.seed() as s:  # B's order needs all 6 of A's cheap step in one pool; A's own order fits either
            remote = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=6, models=[H100], limit_fen=3000, max_pools=1)
        for m in members:
            await m.svc.hub.publish()
        cleared = await h.svc.hub.hub_round()
        assert cleared["status"] == "cleared" and cleared["routes"] == 2, (
            cleared["orders"],
            cleared["routes"],
            cleared["welfare_fen"],
        )
        deadline = time.monotonic() + 20
        while {fedkit.order_row(a.db_url, local)["status"], fedkit.order_row(b.db_url, remote)["status"]} != {"filled"}:
            assert time.monotonic() < deadline, "both orders filled in the hub's first round"
            await asyncio.sleep(0.05)
        with a.seed() as s:
            made = {(c.order_id, c.pool_id) for c in s.scalars(select(Contract)).all()}
        assert (local, dear.pool_id) in made  # the hub's plan: A's own order on its 2000 step
        assert [c.devices for c in fedkit.contracts_on_pool(a.db_url, cheap.pool_id)] == [6]  # B's, at 1000
        assert b.svc.hub.counts.get("routed_unfilled", 0) == 0


async def test_routed_order_is_held_for_the_slot_the_hub_placed_it_in(tmp_path: Path) -> None:
    """A's order may start from a minute on; B's capacity opens at the next hour: the hub places the order
    in a slot of its grid from then on, and A asks B for that window (asking for the
    order's earliest start was refused no_capacity, and the order went back to the hub every round)."""
    async with fedkit.hub_fabric(tmp_path, ["A", "B"], federation_forward_after_seconds=0) as (h, members):
        a, b = members
        now = int(time.time())
        next_hour = -(-(now + 60) // H) * H  # the first hour on the grid at or after the order's earliest start
        with b.seed() as s:
            pool = fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=4, ask_fen=1000)
            offer = s.get(Offer, pool.offer_id)
            assert offer is not None
            offer.window_start = next_hour
        with a.seed() as s:
            order = fedkit.seed_order(
                s, fedkit.seed_buyer(s), devices=4, models=[H100], limit_fen=3000, start_earliest=now + 60
            )
        for m in members:
            await m.svc.hub.publish()
        assert (await h.svc.hub.hub_round())["routes"] == 1
        deadline = time.monotonic() + 20
        while fedkit.order_row(a.db_url, order)["status"] != "filled":
            assert a.svc.hub.counts.get("routed_unfilled", 0) == 0, "the hold was refused"
            assert time.monotonic() < deadline, "order not filled"
            await asyncio.sleep(0.05)
        (made,) = fedkit.contracts_on_pool(b.db_url, pool.pool_id)
        # held for a slot the hub placed it in: on the hub's hour grid, where B has capacity (any such slot
        # clears the same welfare, so which one the engine picks is not fixed), never the earliest start
        assert made.devices == 4 and made.end_at - made.start_at == H
        assert made.start_at % H == 0 and made.start_at >= next_hour
