"""CLI verbs for participants and providers: `hetex provider register`, `hetex buyer register`,
`hetex site add|heartbeat|remove`, `hetex pool add`, `hetex offer post|list|withdraw`."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from exchange.cli.client_common import add_client_flags, drop_none, split_list, with_client
from exchange.cli.common import CliError
from exchange.cli.output import Column, emit_record, emit_rows
from exchange.cli.times import DURATION_HELP, TIME_HELP, duration_arg, time_arg

if TYPE_CHECKING:
    from exchange.client import HetexClient


def _show(args: argparse.Namespace, title: str, data: dict[str, Any], fields: list[str]) -> None:
    emit_record(args, data, fields, title=title)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the provider, buyer, site, pool and offer verbs."""
    for role in ("provider", "buyer"):
        p = sub.add_parser(role, help=f"{role} participants")
        psub = p.add_subparsers(dest=f"{role}_command", required=True)
        reg = psub.add_parser("register", help=f"register this key as a {role} (signed by the key itself)")
        add_client_flags(reg)
        reg.add_argument("--name", required=True, help="display name")
        reg.add_argument("--home-region", help="home region (ISO 3166-2, e.g. CN-SH) for latency limits")
        reg.set_defaults(func=run_register, role=role)

    site = sub.add_parser("site", help="provider sites (data-centre nodes)")
    ssub = site.add_subparsers(dest="site_command", required=True)
    add = ssub.add_parser("add", help="register a site; prints its CRI")
    add_client_flags(add)
    add.add_argument("--region", required=True, help="ISO 3166-2 region served here, e.g. CN-GZ")
    add.add_argument("--name", required=True)
    add.add_argument("--pue", help="power usage effectiveness, e.g. 1.25")
    add.add_argument("--green-share", help="share of green energy 0..1, e.g. 0.6")
    add.add_argument("--interconnect", help="network between nodes, e.g. 'RoCE 400G'")
    add.set_defaults(func=run_site_add)
    hb = ssub.add_parser("heartbeat", help="tell the exchange the site is alive")
    add_client_flags(hb)
    hb.add_argument("cri")
    hb.set_defaults(func=run_site_heartbeat)
    sl = ssub.add_parser("list", help="your sites with pool and device counts")
    add_client_flags(sl)
    sl.add_argument("--status", choices=["active", "tombstoned"])
    sl.add_argument("--region", help="only sites in this region")
    sl.set_defaults(func=run_site_list)
    rm = ssub.add_parser("remove", help="deregister a site (tombstone; open offers withdrawn)")
    add_client_flags(rm)
    rm.add_argument("cri")
    rm.set_defaults(func=run_site_remove)

    pool = sub.add_parser("pool", help="accelerator pools at a site")
    psub2 = pool.add_subparsers(dest="pool_command", required=True)
    padd = psub2.add_parser("add", help="declare a pool; prints its CRI")
    add_client_flags(padd)
    padd.add_argument("--site", required=True, help="site CRI")
    padd.add_argument("--model", required=True, help="catalogue model code, e.g. HW-910B3")
    padd.add_argument("--devices", required=True, type=int)
    padd.add_argument("--memory-gb", type=int, help="per device (default: from the catalogue)")
    padd.add_argument("--nodes", type=int)
    padd.add_argument("--devices-per-node", type=int)
    padd.add_argument("--link", help="intra-node link, e.g. NVLink, HCCS")
    padd.set_defaults(func=run_pool_add)
    pl = psub2.add_parser("list", help="your pools (of every site, or of one)")
    add_client_flags(pl)
    pl.add_argument("--site", help="only pools of this site CRI")
    pl.add_argument("--model", help="only this catalogue model")
    pl.add_argument("--status", choices=["active", "tombstoned"])
    pl.set_defaults(func=run_pool_list)

    offer = sub.add_parser("offer", help="capacity offers")
    osub = offer.add_subparsers(dest="offer_command", required=True)
    post = osub.add_parser("post", help="offer devices of a pool")
    add_client_flags(post)
    post.add_argument("--pool", required=True, help="pool CRI")
    post.add_argument("--devices", required=True, type=int)
    post.add_argument("--ask-fen", required=True, type=int, help="ask price in fen per device-hour")
    post.add_argument("--start", type=time_arg, help=f"window start ({TIME_HELP}; default: now)")
    post.add_argument("--end", type=time_arg, help="window end, same forms (default: open-ended)")
    post.add_argument(
        "--min-lease", type=duration_arg, default=3600, help=f"minimum lease ({DURATION_HELP}; default 1h)"
    )
    post.add_argument("--billing-modes", default="per_minute", help="comma list of per_minute,compute_tier,...")
    post.set_defaults(func=run_offer_post)
    lst = osub.add_parser("list", help="your offers")
    add_client_flags(lst)
    lst.add_argument("--status", choices=["open", "withdrawn"])
    lst.set_defaults(func=run_offer_list)
    wd = osub.add_parser("withdraw", help="withdraw an offer")
    add_client_flags(wd)
    wd.add_argument("id")
    wd.set_defaults(func=run_offer_withdraw)


PARTICIPANT_FIELDS = ["id", "role", "name", "key_id", "operator_code", "home_region", "status"]


def run_register(args: argparse.Namespace) -> int:
    """Register the key's participant."""
    data = with_client(args, lambda c: c.register(args.role, args.name, args.home_region))
    _show(args, f"registered {args.role}", data, PARTICIPANT_FIELDS)
    return 0


SITE_FIELDS = ["cri", "region", "name", "pue", "green_share", "interconnect", "status", "last_heartbeat_at"]


def run_site_add(args: argparse.Namespace) -> int:
    """Register a site."""
    extra = drop_none({"pue": args.pue, "green_share": args.green_share, "interconnect": args.interconnect})
    data = with_client(args, lambda c: c.add_site(args.region, args.name, **extra))
    _show(args, "site", data, SITE_FIELDS)
    return 0


async def _sites(c: HetexClient, status: str | None = None) -> list[dict[str, Any]]:
    data = await c.request("GET", "/v1/sites", params={"status": status})
    sites: list[dict[str, Any]] = data["sites"]
    return sites


def run_site_list(args: argparse.Namespace) -> int:
    """List own sites."""
    sites = with_client(args, lambda c: _sites(c, args.status))
    if args.region:
        sites = [s for s in sites if s["region"] == args.region]
    columns = [
        Column("site", "cri", no_wrap=True),
        Column("name", "name"),
        Column("region", "region"),
        Column("pools", lambda s: len(s["pools"])),
        Column("devices", lambda s: sum(p["devices"] for p in s["pools"] if p["status"] == "active")),
        Column("status", "status"),
        Column("heartbeat", "last_heartbeat_at", is_time=True),
    ]
    emit_rows(args, {"sites": sites}, sites, columns, title=f"sites ({len(sites)})")
    return 0


def run_pool_list(args: argparse.Namespace) -> int:
    """List own pools."""
    sites = with_client(args, lambda c: _sites(c))
    pools = [p for s in sites for p in s["pools"]]
    if args.site:
        pools = [p for p in pools if p["site_cri"] == args.site]
    if args.model:
        pools = [p for p in pools if p["model"] == args.model]
    if args.status:
        pools = [p for p in pools if p["status"] == args.status]
    columns = [
        Column("pool", "cri", no_wrap=True),
        Column("model", "model"),
        Column("devices", "devices"),
        Column("nodes", lambda p: f"{p['nodes']}x{p['devices_per_node']}"),
        Column("memory GB", "memory_gb"),
        Column("status", "status"),
    ]
    emit_rows(args, {"pools": pools}, pools, columns, title=f"pools ({len(pools)})")
    return 0


def run_site_heartbeat(args: argparse.Namespace) -> int:
    """Send a heartbeat."""
    data = with_client(args, lambda c: c.heartbeat(args.cri))
    _show(args, "heartbeat", data, ["cri", "last_heartbeat_at", "live_until"])
    return 0


def run_site_remove(args: argparse.Namespace) -> int:
    """Deregister a site."""
    data = with_client(args, lambda c: c.request("DELETE", f"/v1/sites/{args.cri}"))
    _show(args, "site tombstone", data, [*SITE_FIELDS, "tombstoned_at"])
    return 0


POOL_FIELDS = ["cri", "site_cri", "model", "devices", "memory_gb", "nodes", "devices_per_node", "status"]


def run_pool_add(args: argparse.Namespace) -> int:
    """Declare a pool."""
    extra = drop_none(
        {
            "memory_gb": args.memory_gb,
            "nodes": args.nodes,
            "devices_per_node": args.devices_per_node,
            "intra_node_link": args.link,
        }
    )
    data = with_client(args, lambda c: c.add_pool(args.site, args.model, args.devices, **extra))
    _show(args, "pool", data, POOL_FIELDS)
    return 0


OFFER_FIELDS = ["id", "pool_cri", "model", "region", "devices", "ask_fen", "window_start", "window_end", "status"]


def run_offer_post(args: argparse.Namespace) -> int:
    """Post an offer."""
    modes = split_list(args.billing_modes)
    if not modes:
        raise CliError("--billing-modes needs at least one mode")
    start = int(time.time()) if args.start is None else args.start
    extra = drop_none({"window_end": args.end, "min_lease_seconds": args.min_lease, "billing_modes": modes})
    data = with_client(args, lambda c: c.post_offer(args.pool, args.devices, args.ask_fen, start, **extra))
    _show(args, "offer", data, [*OFFER_FIELDS, "version"])
    return 0


def run_offer_list(args: argparse.Namespace) -> int:
    """List own offers."""

    async def call(c: HetexClient) -> Any:
        return await c.request("GET", "/v1/offers", params={"status": args.status})

    data = with_client(args, call)
    columns = [
        Column("id", "id", is_id=True),
        Column("pool", "pool_cri", no_wrap=True),
        Column("dev", "devices"),
        Column("fen/dev-h", "ask_fen"),
        Column("from", "window_start", is_time=True),
        Column("until", "window_end", is_time=True),
        Column("status", "status"),
    ]
    emit_rows(args, data, data["offers"], columns, title=f"offers ({len(data['offers'])})")
    return 0


def run_offer_withdraw(args: argparse.Namespace) -> int:
    """Withdraw an offer."""
    data = with_client(args, lambda c: c.request("DELETE", f"/v1/offers/{args.id}"))
    _show(args, "offer", data, [*OFFER_FIELDS, "version"])
    return 0
