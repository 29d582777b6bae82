"""`hetex market offers|depth|prices|quote`, `hetex round list|show` and `hetex peer list|evidence|reverify`:
the public market view, clearing rounds and federation peers, over the signed HTTP client."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from exchange.cli.client_common import add_client_flags, with_client
from exchange.cli.common import group
from exchange.cli.contracts import FULL_ID, yuan
from exchange.cli.errors import CliError
from exchange.cli.output import Column, emit_record, emit_rows, resolve_prefix
from exchange.cli.times import DURATION_HELP, TIME_HELP, duration_arg, human_duration, time_arg

if TYPE_CHECKING:
    from exchange.client import HetexClient


def register(sub: argparse._SubParsersAction) -> None:
    """Add the market reads, `round list|show` and `peer list|evidence|reverify`."""
    msub = group(sub, "market", "the live market: offers, depth, prices, quote, snapshot")
    offers = msub.add_parser("offers", help="free offered devices by region and model family, cheapest first")
    add_client_flags(offers)
    offers.add_argument("--region", help="only this region, e.g. CN-GZ")
    offers.add_argument("--family", help="only this architecture family")
    offers.add_argument("--max-ask-fen", type=int, help="only classes whose lowest ask is at most this (fen/dev-h)")
    offers.add_argument("--min-devices", type=int, default=1, help="at least this many free devices (default 1)")
    offers.set_defaults(func=run_offers)
    depth = msub.add_parser("depth", help="open demand against free offered devices by region and family")
    add_client_flags(depth)
    depth.add_argument("--region")
    depth.add_argument("--family")
    depth.set_defaults(func=run_depth)
    prices = msub.add_parser("prices", help="last clearing prices by region and family")
    add_client_flags(prices)
    prices.add_argument("--region")
    prices.add_argument("--family")
    prices.set_defaults(func=run_prices)
    quote = msub.add_parser("quote", help="what a prospective order would cost at the market's current prices")
    add_client_flags(quote)
    quote.add_argument("--devices", type=int, required=True)
    quote.add_argument("--duration", type=duration_arg, required=True, help=DURATION_HELP)
    quote.add_argument("--family", help="architecture family (default: all)")
    quote.add_argument("--region", help="region (default: all)")
    quote.set_defaults(func=run_quote)

    rsub = group(sub, "round", "clearing rounds")
    rl = rsub.add_parser("list", help="recent clearing rounds, newest first")
    add_client_flags(rl)
    rl.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    rl.add_argument("--status", help="only rounds with this status (completed, failed, ...)")
    rl.add_argument("--since", type=time_arg, help=f"only rounds started at or after ({TIME_HELP})")
    rl.set_defaults(func=run_round_list)
    rs = rsub.add_parser("show", help="one round: statistics, audit and contracts")
    add_client_flags(rs)
    rs.add_argument("id", help="round id or a unique prefix of it")
    rs.set_defaults(func=run_round_show)

    health = sub.add_parser("health", help="is the exchange up? (GET /healthz; --wait polls until it is)")
    health.add_argument("--url", help="exchange base URL (default: $HETEX_URL, the profile's url, or :8470)")
    health.add_argument("--profile", help="config profile")
    health.add_argument("--wait", type=duration_arg, default=0, help="keep trying this long (e.g. 30s)")
    health.add_argument("--json", action="store_true")
    health.set_defaults(func=run_health)

    peer = sub.add_parser("peer", help="federation peers of an exchange")
    psub = peer.add_subparsers(dest="peer_command", required=True, metavar="VERB")
    pl = psub.add_parser("list", help="peers with reachability and log status (operator key)")
    add_client_flags(pl)
    pl.set_defaults(func=run_peer_list)
    pe = psub.add_parser("evidence", help="why peers were flagged inconsistent: two signed checkpoints each (operator)")
    pe.add_argument("authority", nargs="?", help="only this peer's evidence")
    add_client_flags(pe)
    pe.set_defaults(func=run_peer_evidence)
    pr = psub.add_parser(
        "reverify", help="re-verify a flagged peer's log from consistency proofs; restore it if consistent (operator)"
    )
    pr.add_argument("authority", type=authority_arg, help="the peer's authority code")
    add_client_flags(pr)
    pr.set_defaults(func=run_peer_reverify)


async def _market(c: HetexClient) -> dict[str, Any]:
    result: dict[str, Any] = await c.request("GET", "/v1/market")
    return result


def _classes(args: argparse.Namespace, data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = data["classes"]
    if getattr(args, "region", None):
        rows = [r for r in rows if r["region"] == args.region]
    if getattr(args, "family", None):
        rows = [r for r in rows if r["family"] == args.family]
    return list(rows)


def _last(row: Mapping[str, Any]) -> Any:
    last = row.get("last_price") or {}
    return last.get("price_fen_per_device_hour")


def run_offers(args: argparse.Namespace) -> int:
    """Free offered capacity, cheapest first."""
    data = with_client(args, _market)
    rows = [r for r in _classes(args, data) if r["offered_devices"] >= args.min_devices and r["min_ask_fen"]]
    if args.max_ask_fen is not None:
        rows = [r for r in rows if r["min_ask_fen"] <= args.max_ask_fen]
    rows.sort(key=lambda r: (r["min_ask_fen"], r["region"], r["family"]))
    columns = [
        Column("region", "region"),
        Column("family", "family"),
        Column("free devices", "offered_devices"),
        Column("lowest ask fen/dev-h", "min_ask_fen"),
        Column("last price", _last),
    ]
    emit_rows(args, {"as_of": data["as_of"], "classes": rows}, rows, columns, title=f"offers ({len(rows)} classes)")
    return 0


def run_depth(args: argparse.Namespace) -> int:
    """Demand against supply."""
    data = with_client(args, _market)
    rows = _classes(args, data)
    columns = [
        Column("region", "region"),
        Column("family", "family"),
        Column("demand devices", "demand_devices"),
        Column("free devices", "offered_devices"),
        Column("lowest ask", "min_ask_fen"),
    ]
    footer = (
        f"{data['open_orders']} open orders for {data['open_demand_devices']} devices; "
        f"{data['live_offers']} live offers with {data['offered_devices']} free devices. {data['note']}"
    )
    emit_rows(args, {**data, "classes": rows}, rows, columns, title="market depth", footer=footer)
    return 0


def run_prices(args: argparse.Namespace) -> int:
    """Last clearing prices."""
    data = with_client(args, _market)
    rows = [r for r in _classes(args, data) if r.get("last_price")]
    columns = [
        Column("region", "region"),
        Column("family", "family"),
        Column("last price fen/dev-h", _last),
        Column("round", lambda r: r["last_price"].get("round_id"), is_id=True),
        Column("cleared", lambda r: r["last_price"].get("cleared_at"), is_time=True),
    ]
    emit_rows(args, {"as_of": data["as_of"], "classes": rows}, rows, columns, title="last clearing prices")
    return 0


def quote_rows(classes: list[dict[str, Any]], devices: int, seconds: int) -> list[dict[str, Any]]:
    """Per class that could serve `devices`: price per device-hour (last price, else lowest ask) and total."""
    from decimal import ROUND_HALF_UP, Decimal

    out = []
    hours = Decimal(seconds) / Decimal(3600)
    for r in classes:
        last = _last(r)
        price = Decimal(str(last)) if last is not None else (Decimal(r["min_ask_fen"]) if r["min_ask_fen"] else None)
        if price is None:
            continue
        total = (price * devices * hours).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        out.append(
            {
                "region": r["region"],
                "family": r["family"],
                "free_devices": r["offered_devices"],
                "enough_now": r["offered_devices"] >= devices,
                "price_fen_per_device_hour": str(price),
                "basis": "last clearing price" if last is not None else "lowest ask",
                "total_fen": int(total),
            }
        )
    out.sort(key=lambda q: (not q["enough_now"], q["total_fen"]))
    return out


def run_quote(args: argparse.Namespace) -> int:
    """Estimate the cost of an order."""
    if args.devices < 1 or args.duration < 1:
        raise CliError("--devices and --duration must be positive")
    data = with_client(args, _market)
    rows = quote_rows(_classes(args, data), args.devices, args.duration)
    columns = [
        Column("region", "region"),
        Column("family", "family"),
        Column("free", "free_devices"),
        Column("fen/dev-h", "price_fen_per_device_hour"),
        Column("basis", "basis"),
        Column("total ¥", lambda r: yuan(r["total_fen"])),
    ]
    doc = {"devices": args.devices, "duration_seconds": args.duration, "as_of": data["as_of"], "quotes": rows}
    title = f"quote: {args.devices} devices for {human_duration(args.duration)}"
    emit_rows(args, doc, rows, columns, title=title, footer="estimates; the clearing round sets the price")
    return 0


async def _rounds(c: HetexClient, limit: int) -> list[dict[str, Any]]:
    data = await c.request("GET", "/v1/rounds", params={"limit": limit})
    items: list[dict[str, Any]] = data["rounds"]
    return items


def run_round_list(args: argparse.Namespace) -> int:
    """List rounds."""
    rows = with_client(args, lambda c: _rounds(c, args.limit))
    if args.status:
        rows = [r for r in rows if r["status"] == args.status]
    if args.since is not None:
        rows = [r for r in rows if (r.get("started_at") or 0) >= args.since]
    columns = [
        Column("id", "id", is_id=True),
        Column("status", "status"),
        Column("trigger", "trigger"),
        Column("started", "started_at", is_time=True),
        Column("orders", "orders"),
        Column("offers", "offers"),
        Column("contracts", "contracts"),
        Column("matched dev", "matched_devices"),
        Column("welfare ¥", lambda r: yuan(r.get("welfare_fen"))),
        Column("gap", "gap"),
    ]
    emit_rows(args, {"rounds": rows}, rows, columns, title=f"rounds ({len(rows)})")
    return 0


def run_round_show(args: argparse.Namespace) -> int:
    """Show one round."""

    async def call(c: HetexClient) -> dict[str, Any]:
        rid = args.id
        if len(rid) < FULL_ID:
            rid = resolve_prefix(rid, [r["id"] for r in await _rounds(c, 500)], "round")
        result: dict[str, Any] = await c.request("GET", f"/v1/rounds/{rid}")
        return result

    data = with_client(args, call)
    view = {**data, "audit_ok": (data.get("audit") or {}).get("ok"), "contract_count": len(data["contract_ids"])}
    fields = [
        "id",
        "status",
        "trigger",
        "started_at",
        "finished_at",
        "method",
        "pricing_rule",
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
        "audit_ok",
        "error",
    ]
    emit_record(args, view, fields, title=f"round ({data['status']})")
    return 0


def run_health(args: argparse.Namespace) -> int:
    """GET /healthz (unsigned), retrying until --wait runs out; exit 4 when it never answers."""
    import asyncio
    import http.client
    import json
    import time

    from exchange.cli.client_common import client_url
    from exchange.cli.errors import EXIT_UNAVAILABLE
    from exchange.client import send_stdlib

    url = client_url(args).rstrip("/") + "/healthz"
    deadline = time.monotonic() + args.wait
    while True:
        try:
            status, body = asyncio.run(asyncio.to_thread(send_stdlib, "GET", url, b"", {}, 5.0))
            if status == 200:
                break
            why = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            raise CliError(f"the exchange at {url} is not answering: {why}", EXIT_UNAVAILABLE)
        time.sleep(0.2)
    data = json.loads(body)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"{url}: {data.get('status')} " + " ".join(f"{k}={v}" for k, v in data.items() if k != "status"))
    return 0


def run_peer_list(args: argparse.Namespace) -> int:
    """List federation peers."""
    data = with_client(args, lambda c: c.request("GET", "/v1/federation/peers"))
    rows = data["peers"]
    columns = [
        Column("authority", "authority"),
        Column("url", "url"),
        Column("status", "status"),
        Column("reachable", "reachable"),
        Column("key id", "key_id"),
        Column("last ok", "last_ok_at", is_time=True),
        Column("last error", "last_error"),
    ]
    emit_rows(args, data, rows, columns, title=f"peers ({len(rows)})")
    return 0


def authority_arg(text: str) -> str:
    """An authority code (1-8 of A-Z, 0-9), upper-cased; else a usage error."""
    code = text.strip().upper()
    if not (1 <= len(code) <= 8 and code.isascii() and code.isalnum()):
        raise argparse.ArgumentTypeError(f"not an authority code (1-8 of A-Z, 0-9): {text!r}")
    return code


def run_peer_evidence(args: argparse.Namespace) -> int:
    """List the evidence behind log flags (the checkpoint notes are in --json)."""
    params = {"peer": authority_arg(args.authority)} if args.authority else None
    data = with_client(args, lambda c: c.request("GET", "/v1/federation/evidence", params=params))
    rows = data["evidence"]
    columns = [
        Column("peer", "peer"),
        Column("detected", "detected_at", is_time=True),
        Column("kept size", lambda r: (r.get("kept") or {}).get("size")),
        Column("seen size", lambda r: (r.get("seen") or {}).get("size")),
        Column("problem", "problem"),
        Column("resolution", lambda r: r.get("resolution") or "open"),
    ]
    emit_rows(args, data, rows, columns, title=f"evidence ({len(rows)})")
    return 0


def run_peer_reverify(args: argparse.Namespace) -> int:
    """Re-verify one peer; exit 1 when it stays flagged, 4 when it could not be reached."""
    data = with_client(args, lambda c: c.request("POST", f"/v1/peers/{args.authority}/reverify"))
    emit_record(args, data, ["peer", "status", "restored", "size", "problems", "unreachable"], title="reverify")
    if data.get("unreachable"):
        raise CliError(f"peer {args.authority} unreachable: {data['unreachable']}", exit_code=4)
    return 0 if data.get("status") == "consistent" else 1
