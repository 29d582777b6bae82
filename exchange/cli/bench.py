"""`hetex bench ...`: measured performance figures (each stage adds its verb with a `register_*`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from exchange.cli import bench_api
from exchange.cli.bench_federation import register_federation
from exchange.cli.bench_match import register_match
from exchange.cli.bench_web import register_web
from exchange.cli.bench_workers import register_workers


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `bench` group and its verbs."""
    p = sub.add_parser("bench", help="performance benchmarks")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    register_ledger(bsub)
    register_audit(bsub)
    bench_api.register_bench(bsub)
    register_match(bsub)
    register_federation(bsub)
    register_round_load(bsub)
    register_web(bsub)
    register_workers(bsub)


def register_ledger(bsub: argparse._SubParsersAction) -> None:
    """`hetex bench ledger`."""
    p = bsub.add_parser("ledger", help="log appends, proofs and checkpoints vs raw Ed25519, on a temporary SQLite")
    p.add_argument("--records", type=int, default=10_000, help="records to append in the batched run")
    p.add_argument("--batch", type=int, default=1000, help="records per transaction in the batched run")
    p.add_argument("--single", type=int, default=None, help="records appended one per transaction (default records/5)")
    p.add_argument("--proofs", type=int, default=1000, help="inclusion and consistency proofs to generate")
    p.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="set sys.setswitchinterval (seconds) first: aiosqlite hands every query to a thread, and the "
        "default 0.005 s GIL switch interval dominates small queries",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_ledger)


def run_ledger(args: argparse.Namespace) -> int:
    """Run the ledger benchmark and print its figures."""
    from exchange.bench.ledger import format_report, run_ledger_bench

    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    result = asyncio.run(
        run_ledger_bench(records=args.records, batch=args.batch, single=args.single, proofs=args.proofs)
    )
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(format_report(result))
    return 0


def register_audit(bsub: argparse._SubParsersAction) -> None:
    """`hetex bench audit`."""
    p = bsub.add_parser("audit", help="audit export and standalone verification vs raw Ed25519, on a temporary SQLite")
    p.add_argument("--records", type=int, default=10_000, help="records appended through the ledger, then exported")
    p.add_argument("--batch", type=int, default=1000, help="records per append transaction")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    """Run the audit benchmark and print its figures."""
    from exchange.bench.audit import format_report, run_audit_bench

    result = asyncio.run(run_audit_bench(records=args.records, batch=args.batch))
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(format_report(result))
    return 0


def register_round_load(bsub: argparse._SubParsersAction) -> None:
    """`hetex bench round-under-load`."""
    p = bsub.add_parser(
        "round-under-load", help="a clearing round while clients submit orders and providers amend offers, vs idle"
    )
    p.add_argument("--clients", type=int, default=100, help="concurrent order-submitting clients (default 100)")
    p.add_argument(
        "--client-interval",
        type=float,
        default=1.0,
        help="seconds between one client's orders (default 1; 0: back to back, saturating the server)",
    )
    p.add_argument("--amend-rate", type=float, default=20.0, help="offer amendments per second (default 20)")
    p.add_argument("--orders", type=int, default=3000, help="open orders seeded before the round (default 3000)")
    p.add_argument("--pools", type=int, default=60, help="pools (one offer each) seeded (default 60)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the seeded market (default 1)")
    p.add_argument(
        "--pg-url",
        help="run on PostgreSQL: a server URL (postgresql://user@host:port/db) whose user may create databases; "
        "three temporary databases are created and dropped",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_round_load)


def run_round_load(args: argparse.Namespace) -> int:
    """Run the round-under-load benchmark and print its figures."""
    from exchange.bench.round_load import format_result, run_round_load_bench, to_json
    from exchange.cli.common import CliError

    if not 1 <= args.clients <= 1000:
        raise CliError("--clients must be between 1 and 1000")
    if not 0 <= args.client_interval <= 60:
        raise CliError("--client-interval must be between 0 and 60 seconds")
    if not 0 < args.amend_rate <= 1000:
        raise CliError("--amend-rate must be > 0 and <= 1000")
    if not 1 <= args.orders <= 100_000 or not 1 <= args.pools <= 10_000:
        raise CliError("--orders must be 1..100000 and --pools 1..10000")
    result = asyncio.run(
        run_round_load_bench(
            clients=args.clients,
            client_interval=args.client_interval,
            amend_rate=args.amend_rate,
            pg_url=args.pg_url,
            orders=args.orders,
            pools=args.pools,
            seed=args.seed,
        )
    )
    sys.stdout.write((to_json(result) if args.json else format_result(result)) + "\n")
    return 0
