"""`hetex bench federation`: one generated national market cleared merged, through a hub and by greedy
forwarding (exchange.bench.federation), shown as a table or one JSON document, with a progress bar on a
terminal."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from exchange.cli.common import CliError, print_json


def register_federation(bsub: argparse._SubParsersAction) -> None:
    """`hetex bench federation`."""
    p = bsub.add_parser(
        "federation", help="a national market cleared merged, through a hub, and by today's greedy forwarding"
    )
    p.add_argument("--exchanges", type=int, default=4, help="member exchanges, 2-12 (default 4), plus one hub")
    p.add_argument("--orders", type=int, default=600, help="orders over all members (default 600)")
    p.add_argument("--pools", type=int, default=150, help="pools over all members (default 150)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    p.add_argument(
        "--processes",
        action="store_true",
        help="also run a smaller market through a hub over HTTP between real processes (latency, messages)",
    )
    p.add_argument("--http-orders", type=int, default=60, help="orders of the HTTP run (default 60)")
    p.add_argument("--http-pools", type=int, default=24, help="pools of the HTTP run (default 24)")
    p.add_argument(
        "--http-mode",
        choices=("coupled", "residual"),
        default="coupled",
        help="HTTP run: the hub clears every open order (coupled, default) or what local rounds left (residual)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_bench_federation)


def _http(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "processes": args.processes,
        "http_orders": args.http_orders,
        "http_pools": args.http_pools,
        "http_coupled": args.http_mode == "coupled",
    }


def run_bench_federation(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures (progress on stderr when it is a terminal)."""
    from exchange.bench.federation import format_report, run_federation_bench

    if not 2 <= args.exchanges <= 12:
        raise CliError("--exchanges must be between 2 and 12")
    if args.orders <= 0 or args.pools <= 0:
        raise CliError("--orders and --pools must be positive")
    console = Console(stderr=True)
    if console.is_terminal:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True
        ) as bar:
            task = bar.add_task("federation", total=100)

            def progress(stage: str, frac: float) -> None:
                bar.update(task, completed=round(frac * 100), description=f"federation: {stage}")

            report = run_federation_bench(args.exchanges, args.orders, args.pools, args.seed, progress, **_http(args))
    else:
        report = run_federation_bench(args.exchanges, args.orders, args.pools, args.seed, **_http(args))
    if args.json:
        print_json(report)
        return 0
    table = Table(title="hetex bench federation", show_header=False)
    for label, value in format_report(report):
        table.add_row(label, value)
    Console().print(table)
    return 0
