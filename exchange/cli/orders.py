"""CLI verbs for buyers: `hetex order submit` (flags or --file order.json), `hetex order list`,
`hetex order show`, `hetex order cancel`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from exchange.cli.client_common import add_client_flags, drop_none, split_list, with_client
from exchange.cli.common import CliError
from exchange.cli.contracts import FULL_ID
from exchange.cli.order_template import register_template
from exchange.cli.output import Column, emit_record, emit_rows, output_format, resolve_prefix
from exchange.cli.times import DURATION_HELP, TIME_HELP, duration_arg, time_arg

if TYPE_CHECKING:
    from exchange.client import HetexClient


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `order` verbs."""
    p = sub.add_parser("order", help="buyer orders")
    osub = p.add_subparsers(dest="order_command", required=True)
    submit = osub.add_parser("submit", help="submit an order from --file or flags")
    add_client_flags(submit)
    submit.add_argument(
        "--file", help="order as YAML or JSON (see `hetex order template`; '-' for stdin); flags below override it"
    )
    submit.add_argument("--idempotency-key", help="retry key (default: a fresh UUID, printed)")
    submit.add_argument("--devices", type=int, help="quantity in devices")
    submit.add_argument("--scu", help="quantity in SCU per hour (decimal)")
    submit.add_argument("--models", help="comma list of acceptable catalogue model codes")
    submit.add_argument("--families", help="comma list of acceptable architecture families")
    submit.add_argument("--min-memory-gb", type=int)
    submit.add_argument("--stack", help="comma list of acceptable software stacks")
    submit.add_argument("--domestic-only", action="store_true", default=None)
    submit.add_argument("--regions", help="comma list of allowed regions (data residency)")
    submit.add_argument("--home-region")
    submit.add_argument("--max-latency-ms", type=int)
    submit.add_argument("--partial", action="store_true", help="accept a partial fill (default all-or-nothing)")
    submit.add_argument("--min-fill", type=int, help="minimum devices when --partial")
    submit.add_argument("--max-pools", type=int)
    submit.add_argument("--same-model", action="store_true", default=None)
    submit.add_argument("--colocation", choices=["node", "site", "region", "any"])
    submit.add_argument("--duration", type=duration_arg, help=DURATION_HELP)
    submit.add_argument("--start-earliest", type=time_arg, help=TIME_HELP)
    submit.add_argument("--start-latest", type=time_arg, help=TIME_HELP)
    submit.add_argument("--limit-fen", type=int, help="limit fen per device-hour for every acceptable model")
    submit.add_argument("--limit-fen-per-scu", type=int, help="limit fen per SCU-hour")
    submit.add_argument("--billing-mode", choices=["per_minute", "compute_tier", "subscription", "project"])
    submit.set_defaults(func=run_submit)

    lst = osub.add_parser("list", help="your orders (newest first)")
    add_client_flags(lst)
    lst.add_argument("--status")
    lst.add_argument("--billing-mode")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--cursor")
    lst.add_argument("--all", action="store_true", help="follow cursors to the end")
    lst.set_defaults(func=run_list)

    show = osub.add_parser("show", help="one order")
    add_client_flags(show)
    show.add_argument("id", help="order id or a unique prefix of it")
    show.set_defaults(func=run_show)

    cancel = osub.add_parser("cancel", help="cancel an order")
    add_client_flags(cancel)
    cancel.add_argument("id", help="order id or a unique prefix of it")
    cancel.set_defaults(func=run_cancel)
    register_template(osub)


def order_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The order body: --file first, then the flags given."""
    import json
    from pathlib import Path

    body: dict[str, Any] = {}
    if args.file:
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            if text.lstrip().startswith(("{", "[")):
                raise CliError(f"{args.file} is not valid JSON: {exc}") from None
            loaded = _yaml(args.file, text)
        if not isinstance(loaded, dict):
            raise CliError(f"{args.file} must hold a JSON object")
        body.update(loaded)
    constraints = drop_none(
        {
            "families": split_list(args.families),
            "min_memory_gb": args.min_memory_gb,
            "stack": split_list(args.stack),
            "domestic_only": args.domestic_only,
        }
    )
    if constraints:
        body["constraints"] = {**body.get("constraints", {}), **constraints}
    body.update(
        drop_none(
            {
                "quantity_devices": args.devices,
                "quantity_scu": args.scu,
                "models": split_list(args.models),
                "regions": split_list(args.regions),
                "home_region": args.home_region,
                "max_latency_ms": args.max_latency_ms,
                "all_or_nothing": False if args.partial else None,
                "min_fill_devices": args.min_fill,
                "max_pools": args.max_pools,
                "same_model": args.same_model,
                "colocation": args.colocation,
                "duration_seconds": args.duration,
                "start_earliest": args.start_earliest,
                "start_latest": args.start_latest,
                "limit_fen_per_device_hour": {"*": args.limit_fen} if args.limit_fen is not None else None,
                "limit_fen_per_scu_hour": args.limit_fen_per_scu,
                "billing_mode": args.billing_mode,
            }
        )
    )
    if args.devices is not None:
        body.pop("quantity_scu", None)
    if args.scu is not None:
        body.pop("quantity_devices", None)
    if not body:
        raise CliError("no order: pass --file order.json or flags such as --devices --models --duration --limit-fen")
    return body


ORDER_FIELDS = ["id", "status", "billing_mode", "quantity_devices", "filled_devices", "idempotency_key", "created_at"]


def _yaml(name: str, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CliError(f"{name} is neither JSON nor YAML: {exc}") from None


def _print_order(args: argparse.Namespace, data: dict[str, Any]) -> None:
    flags = {f"flag {f['code']}": f["message"] for f in data.get("flags", [])}
    emit_record(
        args, {**data, **flags} if output_format(args) == "table" else data, [*ORDER_FIELDS, *flags], title="order"
    )


async def order_id(c: HetexClient, text: str) -> str:
    """A full order id from an id or a unique prefix of one of the caller's orders."""
    if len(text) >= FULL_ID:
        return text
    ids: list[str] = []
    cursor = None
    while True:
        page = await c.list_orders(limit=200, cursor=cursor)
        ids += [o["id"] for o in page["orders"]]
        cursor = page["next_cursor"]
        if not cursor:
            return resolve_prefix(text, ids, "order")


def run_submit(args: argparse.Namespace) -> int:
    """Submit one order."""
    import uuid

    body = order_from_args(args)
    key = args.idempotency_key or str(uuid.uuid4())
    data = with_client(args, lambda c: c.submit_order(body, key))
    _print_order(args, data)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """List own orders as a table (or JSON)."""

    async def call(c: HetexClient) -> dict[str, Any]:
        params = {"status": args.status, "billing_mode": args.billing_mode, "limit": args.limit}
        page = await c.list_orders(**params, cursor=args.cursor)
        orders = list(page["orders"])
        while args.all and page["next_cursor"]:
            page = await c.list_orders(**params, cursor=page["next_cursor"])
            orders += page["orders"]
        return {"orders": orders, "next_cursor": page["next_cursor"]}

    data = with_client(args, call)
    columns = [
        Column("id", "id", is_id=True),
        Column("status", "status"),
        Column("mode", "billing_mode"),
        Column("quantity", lambda o: o["quantity_devices"] or f"{o['spec'].get('quantity_scu', '')} SCU"),
        Column("filled", "filled_devices"),
        Column("flags", lambda o: ",".join(f["code"] for f in o["flags"])),
        Column("created", "created_at", is_time=True),
    ]
    more = f"more: --cursor {data['next_cursor']}" if data["next_cursor"] else None
    emit_rows(args, data, data["orders"], columns, title=f"orders ({len(data['orders'])})", footer=more)
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Show one order."""

    async def call(c: HetexClient) -> Any:
        return await c.request("GET", f"/v1/orders/{await order_id(c, args.id)}")

    _print_order(args, with_client(args, call))
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    """Cancel one order."""

    async def call(c: HetexClient) -> Any:
        return await c.cancel_order(await order_id(c, args.id))

    _print_order(args, with_client(args, call))
    return 0
