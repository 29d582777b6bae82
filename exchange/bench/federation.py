"""`hetex bench federation`: a generated national market (matching.fabric.national: member exchanges in
eastern and western regions, eastern demand, western supply, mixed architectures, device and SCU orders)
cleared three ways in one run: as one merged market, through a hub (coupled: members send their open
orders and supply curves, the hub clears, owners confirm in optimizer mini-rounds; and residual: local
rounds first, only the unfilled demand to the hub), and by today's greedy forwarding. Welfare ratios are
against the merged market cleared in the same process; fill rates and peer messages per forwarded order
are counted as the protocol would send them. With `processes`, the hub round also runs over HTTP
between real `hetex serve` processes (exchange.bench.federation_http) for order-to-contract latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from matching.eligibility import prepare
from matching.fabric import Outcome, clear_greedy_fabric, clear_hub_fabric, clear_merged, national
from matching.relaxation import build_network, relax

Progress = Callable[[str, float], None]


def _ratio(a: int, b: int) -> str:
    return str((Decimal(a) / Decimal(b)).quantize(Decimal("0.0001"))) if b > 0 else "0"


def _fill(out: Outcome, orders: int) -> str:
    return str((Decimal(out.filled_orders) / Decimal(max(1, orders))).quantize(Decimal("0.0001")))


def run_federation_bench(
    exchanges: int,
    orders: int,
    pools: int,
    seed: int,
    progress: Progress | None = None,
    *,
    processes: bool = False,
    http_orders: int = 60,
    http_pools: int = 24,
    http_coupled: bool = True,
) -> dict[str, Any]:
    """Clear one generated national market merged, through the hub and by greedy forwarding; the figures."""
    say = progress or (lambda _s, _f: None)
    say("generating", 0.0)
    fabric = national(exchanges, orders, pools, seed)
    n = len(fabric.market.orders)
    t0 = time.perf_counter()
    merged = clear_merged(fabric)
    t_merged = time.perf_counter() - t0
    say("bound", 0.15)
    lp = int(relax(build_network(prepare(fabric.market))).value) // 3600
    say("hub (coupled)", 0.25)
    t0 = time.perf_counter()
    hub = clear_hub_fabric(fabric)
    t_hub = time.perf_counter() - t0
    say("hub (residual)", 0.45)
    residual = clear_hub_fabric(fabric, coupled=False)
    say("greedy forwarding", 0.6)
    t0 = time.perf_counter()
    greedy = clear_greedy_fabric(fabric, lambda s, f: say(s, 0.6 + 0.4 * f))
    t_greedy = time.perf_counter() - t0
    say("done", 1.0)
    cross = sum(1 for a in hub.allocations if fabric.pool_owner[a.pool_id] != fabric.order_owner[a.order_id])
    http: dict[str, Any] = {}
    if processes:
        from exchange.bench.federation_http import run_http

        http = run_http(national(exchanges, http_orders, http_pools, seed), say, coupled=http_coupled)
    return {
        **http,
        "exchanges": exchanges,
        "hubs": 1,
        "orders": n,
        "pools": len(fabric.market.pools),
        "seed": seed,
        "scu_orders": sum(1 for o in fabric.market.orders if o.quantity_scu is not None),
        "regions": {m: list(r) for m, r in fabric.regions.items()},
        "merged_welfare_fen": merged.welfare_fen,
        "merged_lp_bound_fen": lp,
        "merged_fill_rate": _fill(merged, n),
        "hub_welfare_fen": hub.welfare_fen,
        "welfare_ratio_to_merged": _ratio(hub.welfare_fen, merged.welfare_fen),
        "welfare_ratio_to_lp_bound": _ratio(hub.welfare_fen, lp),
        "fill_rate": _fill(hub, n),
        "cross_exchange_allocations": cross,
        "forwarded_orders": hub.forwarded_orders,
        "federated_fills": hub.federated_fills,
        "refused_holds": hub.refused_holds,
        "peer_messages": hub.peer_messages,
        "peer_messages_per_order": _ratio(hub.peer_messages, max(1, hub.forwarded_orders)),
        "welfare_ratio_residual": _ratio(residual.welfare_fen, merged.welfare_fen),
        "residual_fill_rate": _fill(residual, n),
        "greedy_welfare_fen": greedy.welfare_fen,
        "welfare_ratio_greedy": _ratio(greedy.welfare_fen, merged.welfare_fen),
        "greedy_fill_rate": _fill(greedy, n),
        "greedy_forwarded_orders": greedy.forwarded_orders,
        "greedy_peer_messages_per_order": _ratio(greedy.peer_messages, max(1, greedy.forwarded_orders)),
        "merged_seconds": round(t_merged, 3),
        "hub_seconds": round(t_hub, 3),
        "greedy_seconds": round(t_greedy, 3),
    }


def format_report(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Label/value rows for the human table."""
    return [
        (
            "market",
            f"{r['exchanges']} members + 1 hub, {r['orders']} orders ({r['scu_orders']} SCU), {r['pools']} pools",
        ),
        ("merged welfare (fen)", f"{r['merged_welfare_fen']:,} (LP bound {r['merged_lp_bound_fen']:,})"),
        ("hub welfare (fen)", f"{r['hub_welfare_fen']:,}"),
        ("welfare_ratio_to_merged", r["welfare_ratio_to_merged"]),
        ("welfare_ratio_residual (local rounds first)", r["welfare_ratio_residual"]),
        ("welfare_ratio_greedy (today's forwarding)", r["welfare_ratio_greedy"]),
        ("fill rate hub / merged / greedy", f"{r['fill_rate']} / {r['merged_fill_rate']} / {r['greedy_fill_rate']}"),
        (
            "peer messages per forwarded order hub / greedy",
            f"{r['peer_messages_per_order']} / {r['greedy_peer_messages_per_order']}",
        ),
        ("seconds merged / hub / greedy", f"{r['merged_seconds']} / {r['hub_seconds']} / {r['greedy_seconds']}"),
        *_http_rows(r),
    ]


def _http_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The HTTP run's rows (with --processes)."""
    if "http_welfare_ratio_to_merged" not in r:
        return []
    return [
        ("HTTP orders (SCU)", f"{r['http_orders']} ({r['http_scu_orders']})"),
        ("HTTP welfare_ratio_to_merged", r["http_welfare_ratio_to_merged"]),
        ("HTTP fill rate / merged", f"{r['http_fill_rate']} / {r['http_merged_fill_rate']}"),
        (
            "HTTP SCU orders filled / exactly / merged",
            f"{r['http_scu_orders_filled']} / {r['http_scu_orders_filled_exactly']} / "
            f"{r['http_scu_orders_filled_merged']}",
        ),
        (
            "HTTP order -> filled p50 / p99 (ms)",
            f"{r['http_order_to_contract_ms_p50']} / {r['http_order_to_contract_ms_p99']}",
        ),
    ]
