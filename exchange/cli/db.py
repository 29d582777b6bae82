"""`hetex db upgrade|current`: apply or show schema migrations."""

from __future__ import annotations

import argparse
import asyncio

from exchange.cli.common import add_db_flag, settings_from
from exchange.cli.dbcheck import check_database
from exchange.storage.engine import make_engine
from exchange.storage.migrate import engine_revision, head_revision, upgrade_engine


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `db` verbs."""
    p = sub.add_parser("db", help="database schema")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations up to head")
    add_db_flag(up)
    up.set_defaults(func=run_upgrade)
    cur = db_sub.add_parser("current", help="show the current and head revisions")
    add_db_flag(cur)
    cur.set_defaults(func=run_current)


def run_upgrade(args: argparse.Namespace) -> int:
    """Upgrade to head."""
    settings = settings_from(args)

    async def go() -> str | None:
        engine = make_engine(settings.database_url)
        try:
            await upgrade_engine(engine)
            return await engine_revision(engine)
        finally:
            await engine.dispose()

    print(f"database at revision {asyncio.run(go())} (head {head_revision()})")
    return 0


def run_current(args: argparse.Namespace) -> int:
    """Print current and head; exit 1 when behind."""
    settings = settings_from(args)

    current, head = asyncio.run(check_database(settings.database_url, need_head=False)), head_revision()
    state = "up to date" if current == head else "behind: run `hetex db upgrade`"
    print(f"current {current or '(empty)'}  head {head}  {state}")
    return 0 if current == head else 1
