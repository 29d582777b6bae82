"""`hetex settle run`: settle every due contract period as one batch, directly on the database."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from exchange.cli.common import add_db_flag, print_json, print_table, settings_from
from exchange.cli.dbcheck import open_services
from exchange.cli.times import TIME_HELP, time_arg


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `settle` verbs."""
    p = sub.add_parser("settle", help="settlement of contracts")
    settle_sub = p.add_subparsers(dest="settle_command", required=True)
    run = settle_sub.add_parser("run", help="settle every contract period due by now (one transaction)")
    add_db_flag(run)
    run.add_argument("--key-dir", help="exchange key directory (default: $HETEX_KEY_DIR or .hetex/keys)")
    run.add_argument("--as-of", type=time_arg, help=f"settle what was due by then ({TIME_HELP}; default: now)")
    run.add_argument("--json", action="store_true", help="print the batch as JSON")
    run.set_defaults(func=run_settle)


def run_settle(args: argparse.Namespace) -> int:
    """Run one settlement batch and print what it wrote."""
    settings = settings_from(args)

    async def go() -> dict[str, Any]:
        svc = await open_services(settings)
        try:
            await svc.identity.load()  # settlement records are signed: refuse up front without the key
            return (await svc.settlement.run(None, as_of=args.as_of)).to_json()
        finally:
            await svc.close()

    result = asyncio.run(go())
    if args.json:
        print_json(result)
        return 0
    rows = [
        (
            r["contract_id"],
            r["billing_mode"],
            r["period_start"],
            r["period_end"],
            r["revision"],
            r["buyer_debit_fen"],
            r["provider_credit_fen"],
            r["fee_fen"],
            r["log_index"],
        )
        for r in result["records"]
    ]
    columns = ["contract", "mode", "from", "to", "rev", "buyer debit", "provider credit", "fee", "log index"]
    print_table(f"batch {result['batch_id'] or '(nothing due)'}", columns, rows)
    return 0
