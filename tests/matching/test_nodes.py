"""Node shapes: a gang that must sit on one node fits a node of the pool, and pools pack such gangs
into whole nodes (bug 1 of issue 15)."""

from __future__ import annotations

import pytest

from matching.clearing import clear
from matching.model import Market, Order, Pool

from .markets import plain_pool

NOW = 1_767_225_600


def pool(pid: str, devices: int, per_node: int, ask: int = 100) -> Pool:
    return plain_pool(pid, region="CN-BJ", devices=devices, per_node=per_node, ask=ask)


def gang(oid: str, n: int, limit: int = 1000, seq: int = 0) -> Order:
    return Order(
        id=oid, buyer="B", seq=seq, quantity_devices=n, models=("M-A",), colocation="node", limits={"M-A": limit}
    )


@pytest.mark.parametrize("method", ["mcf", "greedy", "fifo"])
def test_single_node_gang_never_on_smaller_nodes(method: str) -> None:
    m = Market(now=NOW, pools=(pool("P", 8, 2),), orders=(gang("G", 8),))
    r = clear(m, method=method)
    assert r.allocations == ()
    assert [u.reason for u in r.unfilled] == ["no_node_big_enough"]
    assert r.audit.ok


@pytest.mark.parametrize("method", ["mcf", "greedy", "fifo"])
def test_whole_node_packing(method: str) -> None:
    orders = tuple(gang(f"G{i}", 8, seq=i) for i in range(6))
    r = clear(Market(now=NOW, pools=(pool("P", 32, 8),), orders=orders), method=method)
    assert len(r.allocations) == 4 and r.audit.ok
    assert sorted(a.node for a in r.allocations) == [0, 1, 2, 3]
    orders = tuple(gang(f"Q{i}", 4, seq=i) for i in range(10))
    r = clear(Market(now=NOW, pools=(pool("P", 32, 8),), orders=orders), method=method)
    assert len(r.allocations) == 8 and r.audit.ok


@pytest.mark.parametrize("method", ["mcf", "greedy", "fifo"])
def test_no_six_plus_four_on_one_node(method: str) -> None:
    # two nodes of 8: a 6-gang and a 4-gang must sit on different nodes, a second 6-gang cannot fit
    orders = (gang("A", 6, 1000, 0), gang("B", 4, 900, 1), gang("C", 6, 800, 2))
    r = clear(Market(now=NOW, pools=(pool("P", 16, 8),), orders=orders), method=method)
    got = {a.order_id: a.node for a in r.allocations}
    assert r.audit.ok
    assert len(got) == 2 and len(set(got.values())) == 2


def test_audit_flags_a_gang_straddling_nodes() -> None:
    import dataclasses

    from matching.audit import audit
    from matching.eligibility import prepare
    from matching.prices import PricedPiece

    m = Market(now=NOW, pools=(pool("P", 16, 8),), orders=(gang("A", 6), gang("B", 4, seq=1)))
    r = clear(m)
    assert r.audit.ok and len(r.allocations) == 2
    bad = [dataclasses.replace(a, node=0) for a in r.allocations]
    prep = prepare(m)
    a = audit(prep, [PricedPiece(x, 0, 0) for x in bad], [0, 0], None, None, "test")
    assert not a.ok
    assert {c.name: c.violations for c in a.checks}["node_fit"] == 1


def test_node_shape_in_snapshot_json() -> None:
    m = Market(now=NOW, pools=(pool("P", 32, 8),), orders=(gang("G", 8),))
    d = Market.from_json(m.to_json())
    assert d.pools[0].nodes == 4 and d.pools[0].devices_per_node == 8
    assert d.orders[0].colocation == "node"


def test_flow_bound_counts_a_node_gang_only_on_pools_with_a_node_that_holds_it() -> None:
    # an 8-device node gang: P1 is cheap but has nodes of 4, P2 dearer with a node of 8. The bound is
    # (1000 - 300) x 8 fen; a flow that ignored node sizes put the gang on P1 and reported (1000 - 100) x 8.
    from matching.baselines import lp_bound

    m = Market(now=NOW, pools=(pool("P1", 8, 4, ask=100), pool("P2", 8, 8, ask=300)), orders=(gang("G", 8),))
    assert lp_bound(m) == 5600
    r = clear(m)
    assert r.stats.welfare_fen == r.stats.bound_fen == 5600
    assert [(a.pool_id, a.devices) for a in r.allocations] == [("P2", 8)]
