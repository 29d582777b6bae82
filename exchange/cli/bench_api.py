"""`hetex bench api`: signed order submissions/s over the real HTTP stack vs a bare aiohttp endpoint."""

from __future__ import annotations

import argparse
import asyncio
import sys

from exchange.cli.common import CliError


def positive_float(value: str) -> float:
    """argparse type: a number > 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return number


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add `bench api`."""
    p = bench_sub.add_parser("api", help="signed order submissions/s over HTTP vs a bare aiohttp endpoint")
    p.add_argument("--seconds", type=positive_float, default=5.0, help="measurement time per endpoint (default 5)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent client requests (default 32)")
    p.add_argument("--database-url", help="benchmark on this (empty) database instead of a temporary SQLite file")
    p.add_argument(
        "--ladder",
        action="store_true",
        help="measure the four rungs (bare handler, + signature verify, + raw INSERT, full signed order) in one run",
    )
    p.add_argument(
        "--db",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="with --ladder: a temporary SQLite file, or a temporary database on --pg-url (default sqlite)",
    )
    p.add_argument("--pg-url", default=None, help="with --db postgresql: the server's admin URL (default local test)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the figures."""
    from exchange.bench.api import format_result, run_bench, to_json

    if not 1 <= args.concurrency <= 1024:
        raise CliError("--concurrency must be between 1 and 1024")
    if args.ladder:
        from exchange.bench.ladder import DEFAULT_PG, format_ladder, run_ladder

        if args.database_url:
            raise CliError("--ladder makes its own database: use --db (and --pg-url), not --database-url")
        ladder = asyncio.run(run_ladder(args.seconds, args.concurrency, args.db, args.pg_url or DEFAULT_PG))
        sys.stdout.write((to_json(ladder) if args.json else format_ladder(ladder)) + "\n")
        return 0
    result = asyncio.run(run_bench(args.seconds, args.concurrency, args.database_url))
    sys.stdout.write((to_json(result) if args.json else format_result(result)) + "\n")
    return 0
