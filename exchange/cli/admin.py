"""`hetex admin ...`: operator verbs run against the database (exchange key init and rotation, regulators, operators).

Several modules add verbs to the one `admin` group through `admin_subparsers(sub)` (created on first use):
exchange/cli/peers.py adds add-peer (URL, key, authority; it also creates the peer's participant row),
peers and identity.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from exchange.cli.common import CliError, add_db_flag, print_json, print_table, settings_from
from exchange.composition import build_services
from exchange.services.identity import ExchangeKeyInfo, key_file, parse_duration
from exchange.services.participants import ParticipantView
from exchange.storage.migrate import upgrade_engine
from federation.errors import KeyFormatError
from federation.keys import load_public_key

ADMIN_PARSERS = "_hetex_admin_subparsers"


def admin_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subparsers of `hetex admin`, created on first use so every module can add verbs to it."""
    existing: argparse._SubParsersAction | None = getattr(sub, ADMIN_PARSERS, None)
    if existing is not None:
        return existing
    p = sub.add_parser("admin", help="operator tasks (keys, regulators, operators, peers)")
    asub = p.add_subparsers(dest="admin_command", required=True)
    setattr(sub, ADMIN_PARSERS, asub)
    return asub


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `admin` verbs."""
    asub = admin_subparsers(sub)
    init = asub.add_parser("init", help="create the exchange signing key (once per database)")
    init.add_argument("--key-dir", help="directory for the exchange's private keys (default .hetex/keys)")
    init.add_argument("--json", action="store_true")
    add_db_flag(init)
    init.set_defaults(func=run_init)
    rot = asub.add_parser(
        "rotate-key", help="make a fresh exchange signing key current (logged); the old one stays verifiable"
    )
    rot.add_argument("--key-dir", help="directory of the exchange's private keys (shared by its processes)")
    rot.add_argument(
        "--overlap",
        default="1h",
        help="how long the old key's signatures made just before the rotation stay valid (e.g. 0, 90s, 15m, 1h)",
    )
    add_db_flag(rot)
    rot.set_defaults(func=run_rotate_key)
    for role, verb, what in (
        ("regulator", "add-regulator", "a regulator"),
        ("operator", "add-operator", "an operator (may trigger clearing rounds over the API)"),
    ):
        cmd = asub.add_parser(verb, help=f"add {what} by its public key")
        cmd.add_argument("--key", required=True, help="public key: a .pub file or the base64 text")
        cmd.add_argument("--name", required=True)
        cmd.add_argument("--json", action="store_true")
        add_db_flag(cmd)
        cmd.set_defaults(func=run_add, role=role)


def run_init(args: argparse.Namespace) -> int:
    """Create the exchange key on a database without one (migrating it first); print its id and file."""
    settings = settings_from(args)

    async def go() -> ExchangeKeyInfo:
        svc = await build_services(settings)
        try:
            assert svc.engine is not None
            await upgrade_engine(svc.engine)
            return await svc.identity.init()
        finally:
            await svc.close()

    info = asyncio.run(go())
    path = key_file(settings.key_dir, info.key_id).resolve()
    if args.json:
        print_json({**info.to_json(), "key_file": str(path)})
    else:
        print(f"exchange key {info.key_id} created ({info.name}); private key {path}")
        print(f"every hetex process of this exchange needs HETEX_KEY_DIR={path.parent}")
    return 0


def run_rotate_key(args: argparse.Namespace) -> int:
    """Rotate the exchange key (logged, signed by the old key) and print the key table (public data only)."""
    overlap = parse_duration(args.overlap)
    settings = settings_from(args)

    async def go() -> list[dict[str, object]]:
        svc = await build_services(settings)
        try:
            await svc.identity.rotate(svc.ledger, overlap_seconds=overlap)
            return [k.to_json() for k in await svc.identity.keys()]
        finally:
            await svc.close()

    keys = asyncio.run(go())
    print_json({"current": next(k["key_id"] for k in keys if k["status"] == "current"), "keys": keys})
    return 0


def public_key_text(value: str) -> str:
    """Base64 public key from a .pub file path or the literal text."""
    path = Path(value)
    if path.is_file():
        try:
            return load_public_key(path).to_base64()
        except (KeyFormatError, UnicodeDecodeError) as exc:
            raise CliError(f"{value} does not hold a public key: {exc}") from None
    if "/" in value and not value.endswith("="):
        raise CliError(f"no such key file: {value}")
    return value


def run_add(args: argparse.Namespace) -> int:
    """Insert the participant."""
    settings = settings_from(args)
    key = public_key_text(args.key)

    async def go() -> ParticipantView:
        svc = await build_services(settings)
        try:
            return await svc.participants.add_by_operator(args.role, args.name, key)
        finally:
            await svc.close()

    view = asyncio.run(go())
    if args.json:
        print_json(view.model_dump())
    else:
        print_table(f"added {args.role}", ["field", "value"], list(view.model_dump().items()))
    return 0
