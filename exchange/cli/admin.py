"""`hetex admin ...`: operator verbs run against the database (key rotation; others add theirs here).

Several modules add verbs to the one `admin` group through `admin_subparsers(sub)` (created on first use),
e.g. exchange/cli/peers.py adds add-peer, peers and identity.
"""

from __future__ import annotations

import argparse
import asyncio

from exchange.cli.common import add_db_flag, print_json, settings_from
from exchange.composition import build_services

ADMIN_PARSERS = "_hetex_admin_subparsers"


def admin_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subparsers of `hetex admin`, created on first use so every module can add verbs to it."""
    existing: argparse._SubParsersAction | None = getattr(sub, ADMIN_PARSERS, None)
    if existing is not None:
        return existing
    p = sub.add_parser("admin", help="operator tasks (keys, peers)")
    asub = p.add_subparsers(dest="admin_command", required=True)
    setattr(sub, ADMIN_PARSERS, asub)
    return asub


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `admin` verbs."""
    asub = admin_subparsers(sub)
    rot = asub.add_parser("rotate-key", help="make a fresh exchange signing key current; the old one stays verifiable")
    rot.add_argument("--key-dir", help="directory of the exchange signing key")
    add_db_flag(rot)
    rot.set_defaults(func=run_rotate_key)


def run_rotate_key(args: argparse.Namespace) -> int:
    """Rotate the exchange key and print the key table (public data only)."""
    settings = settings_from(args)

    async def go() -> list[dict[str, object]]:
        svc = await build_services(settings)
        try:
            await svc.identity.rotate()
            return [k.to_json() for k in await svc.identity.keys()]
        finally:
            await svc.close()

    keys = asyncio.run(go())
    print_json({"current": next(k["key_id"] for k in keys if k["status"] == "current"), "keys": keys})
    return 0
