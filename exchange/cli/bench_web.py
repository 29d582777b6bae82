"""`hetex bench web`: console page server time on a large SQLite market (exchange.bench.web, imported on use)."""

from __future__ import annotations

import argparse
import asyncio
import json

from exchange.cli.common import CliError


def register_web(bsub: argparse._SubParsersAction) -> None:
    """Add `bench web`."""
    p = bsub.add_parser("web", help="server time of each console page on a large SQLite market")
    p.add_argument("--orders", type=int, default=10_000)
    p.add_argument("--pools", type=int, default=1_000)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--repeat", type=int, default=20, help="timed requests per page (after two warm-ups)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Seed, measure and print."""
    for name in ("orders", "pools", "rounds", "repeat"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be at least 1")
    from exchange.bench.web import format_result, run_bench

    result = asyncio.run(run_bench(orders=args.orders, pools=args.pools, rounds=args.rounds, repeat=args.repeat))
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0
