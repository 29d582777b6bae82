"""`hetex bench match`: one generated instance cleared by the optimizer and both baselines
(matching.bench.run_match_bench), shown as tables, with a progress bar on a terminal."""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from exchange.cli.common import CliError, print_json
from matching.bench import format_report, run_match_bench
from matching.generators import FAMILIES

METHODS = ("mcf", "greedy", "fifo")


def register_match(bsub: argparse._SubParsersAction) -> None:
    """`hetex bench match`."""
    p = bsub.add_parser("match", help="clear one generated instance with the optimizer, greedy and FIFO")
    p.add_argument("--family", choices=FAMILIES, default="scale", help="instance family (default scale)")
    p.add_argument("--orders", type=int, default=7000, help="orders (default 7000)")
    p.add_argument("--pools", type=int, default=1200, help="pools (default 1200)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    p.add_argument("--prices", action="store_true", help="also compute equilibrium prices for the optimizer")
    p.add_argument(
        "--exact",
        type=float,
        nargs="?",
        const=300.0,
        default=None,
        metavar="SECONDS",
        help="also solve the whole integer model (HiGHS, default 300 s) and report the loss against it",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_bench_match)


def run_bench_match(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures (progress on stderr when it is a terminal)."""
    if args.orders <= 0 or args.pools <= 0:
        raise CliError("--orders and --pools must be positive")
    if args.exact is not None and not args.exact > 0:
        raise CliError("--exact must be a positive number of seconds")
    console = Console(stderr=True)
    label = f"{args.family} {args.orders}x{args.pools}"
    if console.is_terminal:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(label, total=100)

            def progress(stage: str, frac: float) -> None:
                bar.update(task, completed=round(frac * 100), description=f"{label}: {stage}")

            report = run_match_bench(
                args.family, args.orders, args.pools, args.seed, progress, prices=args.prices, exact=args.exact
            )
    else:
        report = run_match_bench(args.family, args.orders, args.pools, args.seed, prices=args.prices, exact=args.exact)
    if args.json:
        print_json(report)
    else:
        print_report(report)
    return 0


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """The summary rows of matching.bench and one comparison row per method against the LP bound."""
    out = console or Console()
    summary = Table(title="hetex bench match", show_header=False)
    for label, value in format_report(report):
        summary.add_row(label, value)
    out.print(summary)
    methods = Table(title=f"against the LP bound ({report['lp_bound_fen']:,} fen)")
    for col in ("method", "welfare fen", "gap", "matched devices", "solve s", "audit"):
        methods.add_column(col, justify="right")
    for m in METHODS:
        methods.add_row(
            m,
            f"{report[f'{m}_welfare_fen']:,}",
            f"{Decimal(report[f'{m}_gap']) * 100:.4f}%",
            str(report[f"{m}_matched_devices"]),
            f"{report[f'{m}_solve_seconds']:.3f}",
            "ok" if report[f"{m}_audit_ok"] else "VIOLATIONS",
        )
    out.print(methods)
