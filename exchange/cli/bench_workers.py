"""`hetex bench workers`: signed orders/s through `hetex serve --workers N` on PostgreSQL, N = 1, 2, ..."""

from __future__ import annotations

import argparse
import asyncio
import sys

from exchange.cli.bench_api import positive_float
from exchange.cli.common import CliError


def register_workers(bsub: argparse._SubParsersAction) -> None:
    """Add `bench workers`."""
    p = bsub.add_parser("workers", help="signed orders/s through hetex serve --workers N on PostgreSQL")
    p.add_argument("--seconds", type=positive_float, default=10.0, help="measurement time per run (default 10)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent client requests (default 32)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts, the first is the base (1,2)")
    p.add_argument("--pg-url", default=None, help="PostgreSQL server admin URL (default the local test server)")
    p.add_argument(
        "--sign-live", action="store_true", help="sign each order as it is sent (default: signed before the run)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run and print."""
    try:
        counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        raise CliError("--workers: comma-separated integers, e.g. 1,2") from None
    if not counts or any(not 1 <= n <= 64 for n in counts):
        raise CliError("--workers: each count between 1 and 64")
    if not 1 <= args.concurrency <= 1024:
        raise CliError("--concurrency must be between 1 and 1024")
    from exchange.bench.ladder import DEFAULT_PG
    from exchange.bench.workers import format_result, run_workers_bench, to_json

    result = asyncio.run(
        run_workers_bench(
            args.seconds, args.concurrency, counts, args.pg_url or DEFAULT_PG, presigned=not args.sign_live
        )
    )
    sys.stdout.write((to_json(result) if args.json else format_result(result)) + "\n")
    return 0
