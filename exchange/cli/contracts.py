"""`hetex contract list|show|confirm|cancel`, `hetex settlement list|show` and `hetex statement`: a buyer's
or provider's contracts and money, over the signed HTTP client. Ids may be abbreviated to a unique prefix."""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from exchange.cli.client_common import add_client_flags, with_client
from exchange.cli.errors import CliError
from exchange.cli.output import Column, emit_record, emit_rows, output_format, resolve_prefix
from exchange.cli.times import TIME_HELP, time_arg

if TYPE_CHECKING:
    from exchange.client import HetexClient

FULL_ID = 36
CONTRACT_STATUSES = ("pending", "confirmed", "completed", "cancelled")
CONTRACT_FIELDS = [
    "id",
    "status",
    "order_id",
    "pool_id",
    "buyer_id",
    "provider_id",
    "model",
    "region",
    "devices",
    "start_at",
    "end_at",
    "billable_end",
    "buyer_price_fen",
    "provider_price_fen",
    "fee_bps",
    "billing_mode",
    "billing_terms",
    "created_at",
    "confirmed_at",
    "cancelled_at",
    "cancel_reason",
    "round_id",
    "log_index",
]
SETTLEMENT_FIELDS = [
    "id",
    "contract_id",
    "batch_id",
    "billing_mode",
    "period_start",
    "period_end",
    "revision",
    "device_minutes",
    "buyer_debit_fen",
    "provider_credit_fen",
    "fee_fen",
    "supersedes_id",
    "created_at",
    "log_index",
]


def yuan(fen: int | None) -> str:
    """Integer fen as yuan text, e.g. 123456 -> '1,234.56'."""
    if fen is None:
        return ""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(int(fen)), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `contract`, `settlement` and `statement`."""
    c = sub.add_parser("contract", help="contracts: list, show, confirm, cancel")
    csub = c.add_subparsers(dest="contract_command", required=True, metavar="VERB")
    lst = csub.add_parser("list", help="your contracts as buyer or provider (newest first)")
    add_client_flags(lst)
    lst.add_argument("--status", choices=CONTRACT_STATUSES)
    lst.add_argument("--billing-mode", help="only this billing mode")
    lst.add_argument("--model", help="only this catalogue model")
    lst.add_argument("--region", help="only this region")
    lst.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    lst.set_defaults(func=run_contract_list)
    for verb, what in (("show", "one contract"), ("confirm", "confirm a pending contract (provider)")):
        p = csub.add_parser(verb, help=what)
        add_client_flags(p)
        p.add_argument("id", help="contract id or a unique prefix of it")
        p.set_defaults(func=run_contract_action, action=verb)
    cancel = csub.add_parser("cancel", help="cancel a contract (buyer or provider; rules: specs/billing.md)")
    add_client_flags(cancel)
    cancel.add_argument("id", help="contract id or a unique prefix of it")
    cancel.add_argument("--reason", required=True, help="why (recorded in the log)")
    cancel.set_defaults(func=run_contract_action, action="cancel")

    s = sub.add_parser("settlement", help="settlement records of your contracts")
    ssub = s.add_subparsers(dest="settlement_command", required=True, metavar="VERB")
    slst = ssub.add_parser("list", help="settlement records (all of yours, or of one contract)")
    add_client_flags(slst)
    slst.add_argument("--contract", help="only this contract (id or unique prefix)")
    slst.add_argument("--limit", type=int, default=500, help="at most this many (default 500)")
    slst.set_defaults(func=run_settlement_list)
    show = ssub.add_parser("show", help="one settlement record")
    add_client_flags(show)
    show.add_argument("id", help="settlement id or a unique prefix of it")
    show.set_defaults(func=run_settlement_show)

    st = sub.add_parser(
        "statement",
        help="spend (buyer) or earnings (provider) over a period, with what is accruing now",
        description="Settled amounts by contract and billing mode for settlement periods that end in "
        "[--from, --to), plus an estimate of what is accruing now on running contracts (elapsed unsettled "
        "device-hours at the contract price). Amounts are in yuan; -o json gives integer fen.",
    )
    add_client_flags(st)
    st.add_argument("--from", dest="period_from", type=time_arg, help=f"period start ({TIME_HELP}; default now-30d)")
    st.add_argument("--to", dest="period_to", type=time_arg, help="period end (default now)")
    st.set_defaults(func=run_statement)


async def _contracts(c: HetexClient, limit: int = 500, status: str | None = None) -> list[dict[str, Any]]:
    data = await c.request("GET", "/v1/contracts", params={"limit": limit, "status": status})
    items: list[dict[str, Any]] = data["items"]
    return items


async def contract_id(c: HetexClient, text: str) -> str:
    """A full contract id from an id or a unique prefix of one of the caller's contracts."""
    if len(text) >= FULL_ID:
        return text
    return resolve_prefix(text, [x["id"] for x in await _contracts(c)], "contract")


def contract_columns() -> list[Column]:
    """Columns of `contract list`."""
    return [
        Column("id", "id", is_id=True),
        Column("status", "status"),
        Column("mode", "billing_mode"),
        Column("model", "model"),
        Column("region", "region"),
        Column("dev", "devices"),
        Column("start", "start_at", is_time=True),
        Column("end", "end_at", is_time=True),
        Column("fen/dev-h", "buyer_price_fen"),
    ]


def run_contract_list(args: argparse.Namespace) -> int:
    """List the caller's contracts."""
    data = with_client(args, lambda c: _contracts(c, args.limit, args.status))
    rows = [
        x
        for x in data
        if (args.billing_mode is None or x["billing_mode"] == args.billing_mode)
        and (args.model is None or x["model"] == args.model)
        and (args.region is None or x["region"] == args.region)
    ]
    emit_rows(args, {"items": rows}, rows, contract_columns(), title=f"contracts ({len(rows)})")
    return 0


def run_contract_action(args: argparse.Namespace) -> int:
    """show / confirm / cancel one contract."""

    async def call(c: HetexClient) -> dict[str, Any]:
        cid = await contract_id(c, args.id)
        if args.action == "show":
            result: dict[str, Any] = await c.request("GET", f"/v1/contracts/{cid}")
        elif args.action == "confirm":
            result = await c.request("POST", f"/v1/contracts/{cid}/confirm")
        else:
            result = await c.request("POST", f"/v1/contracts/{cid}/cancel", {"reason": args.reason})
        return result

    data = with_client(args, call)
    emit_record(args, data, CONTRACT_FIELDS, title=f"contract ({data['status']})")
    return 0


def settlement_columns() -> list[Column]:
    """Columns of `settlement list`."""
    return [
        Column("id", "id", is_id=True),
        Column("contract", "contract_id", is_id=True),
        Column("mode", "billing_mode"),
        Column("from", "period_start", is_time=True),
        Column("to", "period_end", is_time=True),
        Column("rev", "revision"),
        Column("dev-min", "device_minutes"),
        Column("buyer debit ¥", lambda r: yuan(r["buyer_debit_fen"])),
        Column("provider credit ¥", lambda r: yuan(r["provider_credit_fen"])),
        Column("fee ¥", lambda r: yuan(r["fee_fen"])),
    ]


def run_settlement_list(args: argparse.Namespace) -> int:
    """List settlement records."""

    async def call(c: HetexClient) -> list[dict[str, Any]]:
        cid = None if args.contract is None else await contract_id(c, args.contract)
        data = await c.request("GET", "/v1/settlements", params={"contract_id": cid, "limit": args.limit})
        items: list[dict[str, Any]] = data["items"]
        return items

    rows = with_client(args, call)
    if output_format(args) == "table":
        rows = [{k: v for k, v in r.items() if k != "envelope"} for r in rows]
    emit_rows(args, {"items": rows}, rows, settlement_columns(), title=f"settlements ({len(rows)})")
    return 0


def run_settlement_show(args: argparse.Namespace) -> int:
    """Show one settlement record."""

    async def call(c: HetexClient) -> dict[str, Any]:
        sid = args.id
        if len(sid) < FULL_ID:
            data = await c.request("GET", "/v1/settlements", params={"limit": 5000})
            sid = resolve_prefix(sid, [x["id"] for x in data["items"]], "settlement")
        result: dict[str, Any] = await c.request("GET", f"/v1/settlements/{sid}")
        return result

    data = with_client(args, call)
    emit_record(args, data, SETTLEMENT_FIELDS, title="settlement record")
    return 0


def current_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records no later revision supersedes."""
    superseded = {r["supersedes_id"] for r in records if r.get("supersedes_id")}
    return [r for r in records if r["id"] not in superseded]


def accruing_fen(contract: dict[str, Any], settled_until: int, now: int, price_key: str) -> int:
    """Estimate of what a running contract accrues from `settled_until` to now: device-hours x price (fen)."""
    from decimal import ROUND_DOWN, Decimal

    if contract["status"] != "confirmed":
        return 0
    start = max(settled_until, contract["start_at"])
    end = min(now, contract["billable_end"])
    if end <= start:
        return 0
    amount = Decimal(contract["devices"]) * Decimal(end - start) / Decimal(3600) * Decimal(contract[price_key])
    return int(amount.to_integral_value(rounding=ROUND_DOWN))


def build_statement(
    role: str, contracts: list[dict[str, Any]], records: list[dict[str, Any]], start: int, end: int, now: int
) -> dict[str, Any]:
    """Settled money per contract and billing mode in [start, end) plus what is accruing now (pure)."""
    if role == "provider":
        amount_key, price_key, what = "provider_credit_fen", "provider_price_fen", "earnings"
    else:
        amount_key, price_key, what = "buyer_debit_fen", "buyer_price_fen", "spend"
    by_contract: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in current_records(records):
        by_contract[r["contract_id"]].append(r)
    rows = []
    for c in contracts:
        recs = by_contract.get(c["id"], [])
        in_period = [r for r in recs if start < r["period_end"] <= end]
        settled = sum(int(r[amount_key]) for r in in_period)
        settled_until = max((r["period_end"] for r in recs), default=c["start_at"])
        accruing = accruing_fen(c, settled_until, now, price_key)
        running = c["status"] in ("pending", "confirmed") and c["start_at"] < end and c["billable_end"] > start
        if not in_period and not accruing and not running:
            continue
        rows.append(
            {
                "contract_id": c["id"],
                "billing_mode": c["billing_mode"],
                "model": c["model"],
                "devices": c["devices"],
                "status": c["status"],
                "periods": len(in_period),
                "device_minutes": sum(int(r["device_minutes"]) for r in in_period),
                "settled_fen": settled,
                "accruing_fen": accruing,
                "settled_until": settled_until,
            }
        )
    modes: dict[str, dict[str, int]] = defaultdict(lambda: {"settled_fen": 0, "accruing_fen": 0})
    for row in rows:
        modes[row["billing_mode"]]["settled_fen"] += row["settled_fen"]
        modes[row["billing_mode"]]["accruing_fen"] += row["accruing_fen"]
    return {
        "role": role,
        "kind": what,
        "from": start,
        "to": end,
        "as_of": now,
        "contracts": rows,
        "by_billing_mode": dict(sorted(modes.items())),
        "settled_fen": sum(r["settled_fen"] for r in rows),
        "accruing_fen": sum(r["accruing_fen"] for r in rows),
        "note": "accruing_fen is an estimate: unsettled elapsed device-hours x the contract price",
    }


def run_statement(args: argparse.Namespace) -> int:
    """Print the caller's statement."""
    now = int(time.time())
    end = args.period_to if args.period_to is not None else now
    start = args.period_from if args.period_from is not None else end - 30 * 86_400
    if start >= end:
        raise CliError("--from must be before --to")

    async def call(c: HetexClient) -> dict[str, Any]:
        me = await c.me()
        if me["role"] not in ("buyer", "provider"):
            raise CliError(f"a statement is for buyers and providers; this key is a {me['role']}")
        contracts = await _contracts(c, 500)
        records = (await c.request("GET", "/v1/settlements", params={"limit": 5000}))["items"]
        statement = build_statement(me["role"], contracts, records, start, end, now)
        statement["participant"] = {"id": me["id"], "name": me["name"]}
        return statement

    data = with_client(args, call)
    columns = [
        Column("contract", "contract_id", is_id=True),
        Column("mode", "billing_mode"),
        Column("model", "model"),
        Column("dev", "devices"),
        Column("status", "status"),
        Column("periods", "periods"),
        Column("settled ¥", lambda r: yuan(r["settled_fen"])),
        Column("accruing ¥", lambda r: yuan(r["accruing_fen"])),
        Column("settled until", "settled_until", is_time=True),
    ]
    modes = ", ".join(
        f"{m} {yuan(v['settled_fen'])} (+{yuan(v['accruing_fen'])})" for m, v in data["by_billing_mode"].items()
    )
    footer = (
        f"total {data['kind']}: settled ¥{yuan(data['settled_fen'])}, accruing now ¥{yuan(data['accruing_fen'])} "
        f"(estimate){'; by mode: ' + modes if modes else ''}"
    )
    from exchange.cli.times import human_time

    utc = bool(getattr(args, "utc", False))
    title = (
        f"{data['kind']} of {data['participant']['name']} ({data['role']}) "
        f"{human_time(start, utc=utc)} .. {human_time(end, utc=utc)}"
    )
    emit_rows(args, data, data["contracts"], columns, title=title, footer=footer)
    return 0
