"""`hetex serve`: run the exchange over HTTP (migrating on start, or refusing when behind)."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from exchange.api.app import create_app
from exchange.api.federation import federation_tasks
from exchange.cli.common import add_db_flag, settings_from
from exchange.composition import build_services
from exchange.settings import Settings
from exchange.storage.migrate import engine_revision, head_revision, upgrade_engine
from identifiers.errors import ConflictError, ValidationError

log = logging.getLogger("hetex.serve")


class SchemaBehindError(ConflictError):
    """The database is older than the code and migrating on start is off."""

    code = "schema_behind"


class UnboundOriginError(ValidationError):
    """`hetex serve` without a public base URL outside --dev: signatures could not be bound to this exchange."""

    code = "public_base_url_required"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `serve`."""
    p = sub.add_parser("serve", help="run the exchange HTTP service")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8470)")
    p.add_argument("--key-dir", help="directory of the exchange signing key (created if missing)")
    p.add_argument("--authority", help="this exchange's CRI authority code")
    p.add_argument("--round-interval", type=float, default=None, help="seconds between clearing rounds (0: off)")
    p.add_argument("--no-migrate", action="store_true", help="refuse to start if the schema is behind")
    p.add_argument(
        "--public-base-url",
        help="URL clients use to reach this exchange; signatures bind to it (HETEX_PUBLIC_BASE_URL)",
    )
    p.add_argument(
        "--dev", action="store_true", help="local development: allow no public base URL (trusts the Host header)"
    )
    add_db_flag(p)
    p.set_defaults(func=run)


async def prepare(settings: Settings) -> web.Application:
    """Build services, bring the schema to head (or refuse), and return the app."""
    svc = await build_services(settings)
    assert svc.engine is not None
    if settings.migrate_on_start:
        await upgrade_engine(svc.engine)
    else:
        current, head = await engine_revision(svc.engine), head_revision()
        if current != head:
            await svc.close()
            raise SchemaBehindError(
                f"database schema is at {current or 'empty'} but this hetex needs {head}: run `hetex db upgrade`"
            )
    app = create_app(svc)
    app.cleanup_ctx.append(federation_tasks)

    async def _close(_app: web.Application) -> None:
        await svc.close()

    app.on_cleanup.append(_close)
    return app


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    extra: dict[str, object] = {}
    if args.no_migrate:
        extra["migrate_on_start"] = False
    if args.round_interval is not None:
        extra["round_interval_seconds"] = args.round_interval
    if args.public_base_url:
        extra["public_base_url"] = args.public_base_url
    if args.dev:
        extra["dev"] = True
    settings = settings_from(args, **extra)
    problem = settings.origin_problem()
    if problem is not None:
        raise UnboundOriginError(problem, field="HETEX_PUBLIC_BASE_URL")
    if not settings.public_base_url:
        log.warning("--dev: no public base URL, so signed requests are checked against their own Host header")
    log.info(
        "hetex serving on http://%s:%s (database %s)",
        settings.host,
        settings.port,
        settings.database_url.split("://", 1)[0],
    )
    web.run_app(prepare(settings), host=settings.host, port=settings.port, print=None)
    return 0
