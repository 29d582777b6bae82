"""`hetex admin add-peer | peers | identity`: peer this exchange with other exchanges (DESIGN.md section 11)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from exchange.cli.admin import admin_subparsers
from exchange.cli.common import add_db_flag, print_json, print_table, settings_from
from exchange.composition import build_services


def register(sub: argparse._SubParsersAction) -> None:
    """Add the peering verbs to `hetex admin`."""
    admin = admin_subparsers(sub)
    add = admin.add_parser("add-peer", help="trust another exchange (its URL, key and authority code)")
    add.add_argument("--url", required=True, help="the peer's public base URL")
    add.add_argument("--key", required=True, help="the peer's exchange key: base64, or its C2SP verifier key string")
    add.add_argument("--authority", required=True, help="the peer's CRI authority code")
    add.add_argument("--origin", help="the peer's key name (log origin); not needed with a verifier key string")
    _common(add)
    add.set_defaults(func=run_add_peer)
    lst = admin.add_parser("peers", help="list peers with their status")
    _common(lst)
    lst.set_defaults(func=run_peers)
    ident = admin.add_parser("identity", help="print this exchange's authority, origin and key (give to peers)")
    _common(ident)
    ident.add_argument("--pub-out", help="also write the exchange public key (base64) to this file, for regulators")
    ident.set_defaults(func=run_identity)


def _common(p: argparse.ArgumentParser) -> None:
    add_db_flag(p)
    p.add_argument("--key-dir", help="directory of the exchange signing key")
    p.add_argument("--json", action="store_true", help="machine-readable output")


async def _with_services(args: argparse.Namespace, fn: Any) -> Any:
    settings = settings_from(args)
    svc = await build_services(settings)
    try:
        await svc.identity.load()  # peering speaks as this exchange: its key must be here
        return await fn(svc)
    finally:
        await svc.federation.close()
        await svc.close()


def run_add_peer(args: argparse.Namespace) -> int:
    """Store the peer (and its participant row)."""
    authority = args.authority
    args.authority = None  # settings_from reads --authority as this exchange's own code otherwise
    view = asyncio.run(
        _with_services(args, lambda svc: svc.federation.peers.add_peer(args.url, args.key, authority, args.origin))
    )
    if args.json:
        print_json(view)
    else:
        print(f"peer {view['authority']} added: {view['url']} key {view['key_id']} ({view['origin']})")
    return 0


def run_peers(args: argparse.Namespace) -> int:
    """List peers."""
    peers = asyncio.run(_with_services(args, lambda svc: svc.federation.peers.peers_view()))
    if args.json:
        print_json(peers)
    else:
        rows = [(p["authority"], p["url"], p["key_id"], p["reachable"], p["log_status"]) for p in peers]
        print_table("peers", ["authority", "url", "key id", "reachable", "log"], rows)
    return 0


def run_identity(args: argparse.Namespace) -> int:
    """Print this exchange's identity."""

    async def go(svc: Any) -> dict[str, Any]:
        view: dict[str, Any] = svc.federation.ctx.identity_view()
        return view

    view = asyncio.run(_with_services(args, go))
    if args.pub_out:
        Path(args.pub_out).write_text(view["public_key"] + "\n", encoding="ascii")
    if args.json:
        print_json(view)
    else:
        print_table("identity", ["field", "value"], list(view.items()))
    return 0
