"""`hetex bench match`: one instance of a benchmark family, cleared by the optimizer and both baselines;
welfare vs the LP bound, matched devices, build and solve time, peak memory, with a progress bar."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from exchange.cli.common import CliError, print_json
from matching.clearing import clear
from matching.generators import FAMILIES, generate
from matching.model import ClearingResult

STAGES = ("generate", "mcf", "greedy", "fifo")
Progressor = Callable[[str], None]


def register_match(bsub: argparse._SubParsersAction) -> None:
    """`hetex bench match`."""
    p = bsub.add_parser("match", help="clear one generated instance with the optimizer, greedy and FIFO")
    p.add_argument("--family", choices=FAMILIES, default="scale", help="instance family (default scale)")
    p.add_argument("--orders", type=int, default=7000, help="orders (default 7000)")
    p.add_argument("--pools", type=int, default=1200, help="pools (default 1200)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    p.add_argument("--no-prices", action="store_true", help="skip equilibrium prices of the optimizer")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_bench_match)


@dataclass(frozen=True)
class MethodFigures:
    """One method's figures on the instance."""

    method: str
    welfare_fen: int
    gap: Decimal
    matched_devices: int
    matched_orders: int
    build_seconds: float
    solve_seconds: float
    price_seconds: float
    wall_seconds: float
    audit_ok: bool


def figures(result: ClearingResult, wall: float, lp_bound: int) -> MethodFigures:
    """Figures of a result against the common LP bound."""
    s = result.stats
    gap = (
        Decimal(0)
        if lp_bound <= 0
        else (Decimal(1) - Decimal(s.welfare_fen) / Decimal(lp_bound)).quantize(Decimal("1e-6"))
    )
    return MethodFigures(
        method=s.method,
        welfare_fen=s.welfare_fen,
        gap=s.gap if s.method == "mcf" else gap,
        matched_devices=s.matched_devices,
        matched_orders=s.matched_orders,
        build_seconds=s.build_seconds,
        solve_seconds=s.solve_seconds,
        price_seconds=s.price_seconds,
        wall_seconds=round(wall, 4),
        audit_ok=result.audit.ok,
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_match(
    family: str, orders: int, pools: int, seed: int, *, prices: bool = True, step: Progressor | None = None
) -> dict[str, Any]:
    """Generate one instance and clear it three ways; every figure from this one run."""
    tick = step or (lambda _stage: None)
    t = time.perf_counter()
    market = generate(family, orders, pools, seed)
    gen_s = time.perf_counter() - t
    tick("generate")
    t = time.perf_counter()
    best = clear(market, method="mcf", prices=prices)
    wall = time.perf_counter() - t
    tick("mcf")
    bound = best.stats.lp_bound_fen
    rows = [figures(best, wall, bound)]
    for method in ("greedy", "fifo"):
        t = time.perf_counter()
        res = clear(market, method=method, prices=False)
        rows.append(figures(res, time.perf_counter() - t, bound))
        tick(method)
    return {
        "family": family,
        "orders": len(market.orders),
        "pools": len(market.pools),
        "seed": seed,
        "generate_seconds": round(gen_s, 4),
        "lp_bound_fen": bound,
        "bound_method": best.stats.bound_method,
        "components": best.stats.components,
        "edges": best.stats.edges,
        "methods": [{**r.__dict__, "gap": str(r.gap)} for r in rows],
        "pricing_rule": best.audit.pricing_rule,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run_bench_match(args: argparse.Namespace) -> int:
    """Run the benchmark, with a progress bar on a terminal, and print its figures."""
    if args.family not in FAMILIES:  # pragma: no cover - argparse refuses first
        raise CliError(f"unknown family {args.family}")
    if args.orders <= 0 or args.pools <= 0:
        raise CliError("--orders and --pools must be positive")
    console = Console(stderr=True)
    show = not args.json and console.is_terminal
    if show:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(f"{args.family} {args.orders}x{args.pools}: generate", total=len(STAGES))

            def step(stage: str) -> None:
                nxt = STAGES[min(STAGES.index(stage) + 1, len(STAGES) - 1)]
                bar.update(task, advance=1, description=f"{args.family} {args.orders}x{args.pools}: {nxt}")

            report = bench_match(args.family, args.orders, args.pools, args.seed, prices=not args.no_prices, step=step)
    else:
        report = bench_match(args.family, args.orders, args.pools, args.seed, prices=not args.no_prices)
    if args.json:
        print_json(report)
        return 0
    print_report(report)
    return 0


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """The benchmark as a table: one row per method, gaps against the shared LP bound."""
    out = console or Console()
    title = (
        f"{report['family']}: {report['orders']} orders x {report['pools']} pools, seed {report['seed']}; "
        f"LP bound {report['lp_bound_fen']:,} fen ({report['bound_method']}); peak RSS {report['peak_rss_mb']} MiB"
    )
    table = Table(title=title)
    for col in (
        "method",
        "welfare fen",
        "gap",
        "matched devices",
        "orders",
        "build s",
        "solve s",
        "price s",
        "wall s",
        "audit",
    ):
        table.add_column(col, justify="right")
    for m in report["methods"]:
        table.add_row(
            m["method"],
            f"{m['welfare_fen']:,}",
            f"{Decimal(m['gap']) * 100:.4f}%",
            str(m["matched_devices"]),
            str(m["matched_orders"]),
            f"{m['build_seconds']:.3f}",
            f"{m['solve_seconds']:.3f}",
            f"{m['price_seconds']:.3f}",
            f"{m['wall_seconds']:.3f}",
            "ok" if m["audit_ok"] else "VIOLATIONS",
        )
    out.print(table)
    sys.stdout.flush()
