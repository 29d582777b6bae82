"""Baselines on the same model and feasibility rules: greedy price-time priority, FIFO first-fit, and the
LP upper bound (the optimum of the aggregated relaxation)."""

from __future__ import annotations

from decimal import Decimal

from matching.eligibility import Prepared, prepare
from matching.model import Market
from matching.placement import Placer
from matching.relaxation import build_network, relax


def greedy_price_time(prep: Prepared, placer: Placer) -> None:
    """Orders by best limit price (desc) then arrival; each takes its best-surplus feasible placement."""
    keys = []
    for o, order in enumerate(prep.market.orders):
        es = prep.order_edges[o]
        if len(es):
            keys.append((-int(prep.e_limit[es].max()), order.seq, o))
    keys.sort()
    for _, _, o in keys:
        placer.place(o, prep.order_edges[o])


def fifo_first_fit(prep: Prepared, placer: Placer) -> None:
    """Arrival order; each order takes the first feasible pool (a plain cluster scheduler)."""
    keys = sorted((order.seq, o) for o, order in enumerate(prep.market.orders) if len(prep.order_edges[o]))
    for _, o in keys:
        placer.place(o, prep.order_edges[o], first_fit=True)


def lp_bound(market: Market) -> Decimal:
    """Optimum of the aggregated relaxation in fen (min-cost flow, or the time-indexed LP)."""
    rel = relax(build_network(prepare(market)))
    return (Decimal(repr(rel.value)) / 3600).quantize(Decimal("0.001"))
