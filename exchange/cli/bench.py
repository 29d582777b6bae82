"""`hetex bench ...`: measured performance figures (each stage adds its verb with a `register_*`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from exchange.cli import bench_api
from exchange.cli.bench_match import register_match
from exchange.cli.bench_web import register_web


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `bench` group and its verbs."""
    p = sub.add_parser("bench", help="performance benchmarks")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    register_ledger(bsub)
    register_audit(bsub)
    bench_api.register_bench(bsub)
    register_match(bsub)
    register_web(bsub)


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
