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
    register_fleet(bsub)


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


def register_fleet(bsub: argparse._SubParsersAction) -> None:
    """`hetex bench fleet`."""
    from exchange.bench.ladder import DEFAULT_PG

    p = bsub.add_parser(
        "fleet", help="simulated provider sites (signed heartbeats, batched usage), buyer orders and periodic rounds"
    )
    p.add_argument("--sites", type=int, default=1000, help="simulated sites, each its own provider key (default 1000)")
    p.add_argument("--interval", type=float, default=30.0, help="heartbeat interval per site, seconds (default 30)")
    p.add_argument(
        "--usage-interval", type=float, default=300.0, help="batched usage report interval per site (default 300)"
    )
    p.add_argument("--meters", type=int, default=4, help="meters (usage envelopes) per site batch (default 4)")
    p.add_argument("--order-rate", type=float, default=2.0, help="buyer orders per second (default 2)")
    p.add_argument("--round-interval", type=float, default=60.0, help="seconds between rounds (default 60; 0: none)")
    p.add_argument("--duration", type=float, default=120.0, help="measured seconds (default 120)")
    p.add_argument("--max-in-flight", type=int, default=512, help="outstanding requests before the schedule slips")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="serve with `hetex serve --workers N` (N > 1: PostgreSQL only); 0 (default): the bench app server",
    )
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite", help="database (default sqlite)")
    p.add_argument("--pg-url", default=DEFAULT_PG, help="with --db postgresql: the server's admin URL")
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of unmeasured heartbeats (one per site) before the window (default: the interval, at most 60)",
    )
    p.add_argument(
        "--sign-live",
        action="store_true",
        help="sign each heartbeat as it is sent (default: signed before the window, created = its send time)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_fleet)


def _stderr_progress(message: str) -> None:
    sys.stderr.write(f"fleet: {message}\n")


def run_fleet(args: argparse.Namespace) -> int:
    """Run the fleet benchmark and print its figures (progress on stderr)."""
    from exchange.bench.fleet import format_fleet
    from exchange.bench.fleet import run_fleet as run
    from exchange.cli.common import CliError

    if args.sites < 1 or args.interval <= 0 or args.usage_interval <= 0 or args.duration <= 0:
        raise CliError("--sites, --interval, --usage-interval and --duration must be positive")
    if not 1 <= args.meters <= 500 or args.order_rate < 0 or args.round_interval < 0 or args.max_in_flight < 1:
        raise CliError("--meters must be 1-500; --order-rate, --round-interval >= 0; --max-in-flight >= 1")
    if args.warmup is not None and args.warmup < 0:
        raise CliError("--warmup must be >= 0")
    if args.workers < 0 or (args.workers > 1 and args.db != "postgresql"):
        raise CliError("--workers must be >= 0, and above 1 only with --db postgresql (SQLite takes one writer)")
    result = asyncio.run(
        run(
            sites=args.sites,
            interval=args.interval,
            duration=args.duration,
            usage_interval=args.usage_interval,
            meters=args.meters,
            order_rate=args.order_rate,
            round_interval=args.round_interval,
            max_in_flight=args.max_in_flight,
            workers=args.workers,
            db=args.db,
            pg_url=args.pg_url,
            progress=_stderr_progress,
            presign=not args.sign_live,
            warmup=args.warmup,
        )
    )
    sys.stdout.write((json.dumps(result, indent=2) if args.json else format_fleet(result)) + "\n")
    return 0
