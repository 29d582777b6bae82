"""`hetex admin ...`: operator verbs run against the database (key rotation; others add theirs here)."""

from __future__ import annotations

import argparse
import asyncio

from exchange.cli.common import add_db_flag, print_json, settings_from
from exchange.composition import build_services


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `admin` verbs."""
    p = sub.add_parser("admin", help="operator tasks")
    asub = p.add_subparsers(dest="admin_command", required=True)
    rot = asub.add_parser("rotate-key", help="make a fresh exchange signing key current; the old one stays verifiable")
    rot.add_argument("--key-dir", help="directory of the exchange signing key")
    add_db_flag(rot)
    rot.set_defaults(func=run_rotate_key)
    op = asub.add_parser("add-operator", help="register an operator key (may trigger clearing rounds over the API)")
    op.add_argument("--key", required=True, help="the operator's Ed25519 public key (base64, as participants use)")
    op.add_argument("--name", default="Exchange operator", help="display name")
    add_db_flag(op)
    op.set_defaults(func=run_add_operator)


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


def run_add_operator(args: argparse.Namespace) -> int:
    """Add a participant with role `operator` for the given public key and print it."""
    settings = settings_from(args)

    async def go() -> dict[str, object]:
        svc = await build_services(settings)
        try:
            view = await svc.participants.add_by_operator("operator", args.name, args.key.strip())
            return view.model_dump()
        finally:
            await svc.close()

    print_json(asyncio.run(go()))
    return 0
