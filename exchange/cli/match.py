"""`hetex match` (clear a saved snapshot offline), `hetex market snapshot` (save the live market) and
`hetex round run` (run one clearing round on the database, as the operator)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.cli.common import CliError, add_db_flag, group, print_json, settings_from

if TYPE_CHECKING:
    from rich.console import Console

    from matching.model import ClearingResult, Market

#: matching.clearing.METHODS, spelled out so parsing `hetex round ...` does not import the solver (a test checks)
METHODS = ("mcf", "greedy", "fifo")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `match`, `market snapshot` and `round run`."""
    p = sub.add_parser("match", help="clear a saved market snapshot offline (no database)")
    p.add_argument("--market", required=True, help="market snapshot JSON (hetex.market-snapshot/1)")
    p.add_argument("--method", choices=METHODS, default="mcf", help="clearing method (default mcf)")
    p.add_argument("--no-prices", action="store_true", help="skip equilibrium prices (faster)")
    p.add_argument("--limit", type=int, default=30, help="rows per table in human output (default 30)")
    p.add_argument("--json", action="store_true", help="print the clearing result as JSON")
    p.set_defaults(func=run_match)

    msub = group(sub, "market", "the live market: offers, depth, prices, quote, snapshot")
    snap = msub.add_parser("snapshot", help="save the current market as a snapshot (replay with `hetex match`)")
    snap.add_argument("--out", required=True, help="file to write ('-' for stdout)")
    add_db_flag(snap)
    snap.set_defaults(func=run_snapshot)

    rsub = group(sub, "round", "clearing rounds")
    run = rsub.add_parser("run", help="run one clearing round on the database now")
    run.add_argument("--json", action="store_true", help="print the round as JSON")
    run.add_argument("--key-dir", help="directory of the exchange's private keys (default: $HETEX_KEY_DIR)")
    add_db_flag(run)
    run.set_defaults(func=run_round)


def load_market(path: str) -> Market:
    """Read a snapshot file ('-' for stdin); a bad file is a CLI error, not a traceback."""
    from matching.model import Market

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return Market.from_json(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from None


def run_match(args: argparse.Namespace) -> int:
    """Clear the snapshot and print allocations, prices, statistics and the audit."""
    from matching.clearing import clear
    from matching.model import result_to_dict

    market = load_market(args.market)
    result = clear(market, method=args.method, prices=not args.no_prices)
    if args.json:
        print_json(result_to_dict(result))
    else:
        print_result(result, limit=args.limit)
    return 0


def print_result(result: ClearingResult, *, limit: int = 30, console: Console | None = None) -> None:
    """Human tables of a clearing result."""
    from rich.console import Console
    from rich.table import Table

    out = console or Console()
    s = result.stats
    stats = Table(title="clearing", show_header=False)
    for name, value in [
        ("method", s.method),
        ("orders / pools / edges", f"{s.orders} / {s.pools} / {s.edges}"),
        ("components", s.components),
        ("welfare (fen)", f"{s.welfare_fen:,}"),
        (f"LP bound (fen, {s.bound_method})", f"{s.lp_bound_fen:,}"),
        ("gap to bound", f"{s.gap * 100:.4f}%"),
        ("matched orders / devices", f"{s.matched_orders} / {s.matched_devices}"),
        ("build / solve / price s", f"{s.build_seconds:.3f} / {s.solve_seconds:.3f} / {s.price_seconds:.3f}"),
    ]:
        stats.add_row(name, str(value))
    out.print(stats)
    a = result.audit
    audit = Table(title=f"audit ({'ok' if a.ok else 'VIOLATIONS'}; rule: {a.pricing_rule})")
    audit.add_column("check")
    audit.add_column("violations", justify="right")
    audit.add_column("detail")
    audit.add_row("IR buyers", str(a.ir_buyer_violations), "")
    audit.add_row("IR providers", str(a.ir_provider_violations), "")
    audit.add_row("no envy", str(a.envy_violations), "")
    audit.add_row("budget balance", "0" if a.budget_balanced else "1", f"fees {a.fee_total:,} fen")
    audit.add_row("uplift (fen)", str(a.uplift_fen_total), "")
    for c in a.checks:
        audit.add_row(c.name, str(c.violations), c.detail)
    out.print(audit)
    allocs = Table(title=f"allocations ({len(result.allocations)}; first {min(limit, len(result.allocations))})")
    for col in ("order", "pool", "devices", "start", "end", "buyer fen/dev-h", "provider fen/dev-h", "pays", "fee"):
        allocs.add_column(col)
    for x in result.allocations[:limit]:
        allocs.add_row(
            x.order_id,
            x.pool_id,
            str(x.devices),
            str(x.start),
            str(x.end),
            str(x.buyer_price_fen),
            str(x.provider_price_fen),
            f"{x.buyer_pays:,}",
            f"{x.fee:,}",
        )
    out.print(allocs)
    prices = Table(title=f"posted prices ({len(result.prices)} groups; first {min(limit, len(result.prices))})")
    for col in ("region", "model", "gang", "lease slots", "start", "buyer fen/dev-h", "min ask", "rent"):
        prices.add_column(col)
    for p in sorted(result.prices, key=lambda p: (p.region, p.model, p.gang, p.start))[:limit]:
        prices.add_row(
            p.region,
            p.model,
            str(p.gang),
            str(p.lease_slots),
            str(p.start),
            str(p.buyer_price),
            str(p.min_ask_fen),
            str(p.rent),
        )
    out.print(prices)
    if result.unfilled:
        reasons = Counter(u.reason for u in result.unfilled)
        unf = Table(title=f"unfilled orders ({len(result.unfilled)})")
        unf.add_column("reason")
        unf.add_column("orders", justify="right")
        for reason, n in reasons.most_common():
            unf.add_row(reason, str(n))
        out.print(unf)


async def _with_services(args: argparse.Namespace, action: Any) -> Any:
    from exchange.cli.dbcheck import open_services

    svc = await open_services(settings_from(args))
    try:
        return await action(svc)
    finally:
        await svc.close()


def run_snapshot(args: argparse.Namespace) -> int:
    """Write the database's current market as a snapshot file."""

    async def take(svc: Any) -> Market:
        market: Market = await svc.rounds.market_snapshot()
        return market

    import asyncio

    market = asyncio.run(_with_services(args, take))
    text = json.dumps(json.loads(market.to_json()), indent=1, sort_keys=True) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(
            f"wrote {args.out}: {len(market.orders)} orders, {len(market.pools)} pools (now={market.now})",
            file=sys.stderr,
        )
    return 0


def run_round(args: argparse.Namespace) -> int:
    """Run one clearing round (operator, database mode) and print its summary."""

    from exchange.services.disclosure import LOCAL_OPERATOR

    async def go(svc: Any) -> dict[str, Any]:
        await svc.identity.load()  # contracts are signed: refuse before writing anything without the key
        summary = await svc.rounds.run_round("cli")
        view: dict[str, Any] = await svc.rounds.get(summary.round_id, LOCAL_OPERATOR)
        return view

    import asyncio

    view = asyncio.run(_with_services(args, go))
    if args.json:
        print_json(view)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"round {view['id']} ({view['status']})", show_header=False)
    for key in (
        "orders",
        "offers",
        "contracts",
        "matched_orders",
        "matched_devices",
        "welfare_fen",
        "lp_bound_fen",
        "gap",
        "dropped_allocations",
        "expired_orders",
        "pricing_rule",
    ):
        value = view.get(key)
        if key == "gap" and value is not None:
            value = f"{Decimal(str(value)) * 100:.4f}%"
        table.add_row(key, str(value))
    audit = view.get("audit") or {}
    table.add_row("audit ok", str(audit.get("ok")))
    Console().print(table)
    return 0
