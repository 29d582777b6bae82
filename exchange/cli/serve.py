"""`hetex serve`: run the exchange over HTTP (migrating on start, or refusing when behind)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import socket

from aiohttp import web

from exchange.api.app import create_app
from exchange.api.connections import GuardedSite
from exchange.api.federation import federation_tasks, register_federation_duty
from exchange.cli import settings_doc
from exchange.cli.common import CliError, add_db_flag, settings_from
from exchange.cli.workers import Supervisor
from exchange.composition import Services, build_services
from exchange.services.solver import SOLVERS
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
    p.formatter_class, p.epilog = argparse.RawDescriptionHelpFormatter, settings_doc.text_table()
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8470)")
    p.add_argument(
        "--key-dir", help="directory of the exchange private keys (a key is created only if the database has none)"
    )
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
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="server processes sharing the port (PostgreSQL only; the timed duties run in one of them)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=None,
        help="on SIGTERM: seconds to let in-flight requests and the running round finish (default 10)",
    )
    add_db_flag(p)
    p.set_defaults(func=run)


async def _schema(svc: Services, settings: Settings) -> None:
    """Bring the schema to head, or refuse (closing `svc`) when migrating on start is off and it is behind."""
    assert svc.engine is not None
    if settings.migrate_on_start:
        await upgrade_engine(svc.engine)
        return
    current, head = await engine_revision(svc.engine), head_revision()
    if current != head:
        await svc.close()
        raise SchemaBehindError(
            f"database schema is at {current or 'empty'} but this hetex needs {head}: run `hetex db upgrade`"
        )


async def prepare_database(settings: Settings) -> None:
    """`--workers`: in the parent, once: the schema to head (or refuse) and the exchange key (created if none)."""
    svc = await build_services(settings)
    try:
        await _schema(svc, settings)
        await svc.identity.start(create_if_empty=True)
    finally:
        await svc.close()


async def prepare(settings: Settings) -> web.Application:
    """Build services, bring the schema to head (or refuse), and return the app."""
    svc = await build_services(settings, serving=True)
    await _schema(svc, settings)
    try:
        # the one place a key is created implicitly: the first serve of a database without exchange keys
        await svc.identity.start(create_if_empty=True)
    except BaseException:
        await svc.close()
        raise
    register_federation_duty(svc)
    app = create_app(svc)
    app.cleanup_ctx.append(federation_tasks)

    async def _close(_app: web.Application) -> None:
        SOLVERS.close()
        await svc.close()
        log.info("shut down: requests drained, solver stopped, database pool closed")

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
    if args.shutdown_grace is not None:
        if not 0 <= args.shutdown_grace <= 3600:
            raise CliError("--shutdown-grace must be between 0 and 3600 seconds")
        extra["shutdown_grace_seconds"] = args.shutdown_grace
    if args.workers is not None:
        if not 1 <= args.workers <= 64:
            raise CliError("--workers must be between 1 and 64")
        extra["workers"] = args.workers
    settings = settings_from(args, **extra)
    if settings.workers > 1 and settings.is_sqlite:
        raise CliError(
            f"--workers {settings.workers} needs PostgreSQL: SQLite takes one writing process"
            " (use --workers 1, or a postgresql:// database URL)"
        )
    problem = settings.origin_problem()
    if problem is not None:
        raise UnboundOriginError(problem, field="HETEX_PUBLIC_BASE_URL")
    if not settings.public_base_url:
        log.warning("--dev: no public base URL, so signed requests are checked against their own Host header")
    # before any database access: a failed start writes nothing; with workers, each listens on its own
    # SO_REUSEPORT socket (the kernel spreads connections evenly) and this one only holds the port
    bind = reserve if settings.workers > 1 else listen
    sock = bind(settings.host, settings.port)
    log.info(
        "hetex serving on http://%s:%s (database %s, %d worker%s)",
        settings.host,
        sock.getsockname()[1],
        settings.database_url.split("://", 1)[0],
        settings.workers,
        "" if settings.workers == 1 else "s",
    )
    code = 0
    try:
        if settings.workers > 1:
            code = run_workers(settings, sock)
        else:
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(serve(settings, sock))
    finally:
        sock.close()
    log.info("hetex stopped")
    return code


def run_workers(settings: Settings, held: socket.socket) -> int:
    """Migrate and create the key once, then fork `settings.workers` supervised servers, each listening on
    its own SO_REUSEPORT socket on the port `held` (bound, no longer listening) keeps reserved."""
    host, port = held.getsockname()[:2]
    asyncio.run(prepare_database(settings))
    worker_settings = settings.model_copy(update={"migrate_on_start": False})  # done above, once

    def child(_slot: int) -> int:
        held.close()
        sock = listen(host, port, reuse_port=True)  # before this worker's database access
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(worker_settings, sock))
        return 0

    return Supervisor(settings.workers, child, settings.shutdown_grace_seconds).run()


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on host:port, or CliError (exit 2) saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family = infos[0][0]
        return socket.create_server((host, port), family=family, backlog=128, reuse_port=reuse_port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def reserve(host: str, port: int) -> socket.socket:
    """`--workers`: a socket bound (SO_REUSEPORT, not listening) to host:port, holding the port for the
    workers' listening sockets, or CliError (exit 2) saying why the port cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _type, _proto, _name, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def start_site(runner: web.AppRunner, settings: Settings, sock: socket.socket | None = None) -> GuardedSite:
    """Listen on the configured address (or the pre-bound `sock`) with the connection guard."""
    site = GuardedSite(
        runner,
        settings.host,
        settings.port,
        max_per_address=settings.http_max_connections_per_address,
        head_timeout=settings.http_head_timeout_seconds,
        sock=sock,
    )
    await site.start()
    return site


def make_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The app's runner with the connection settings: idle keep-alive cut, shutdown grace, and request bodies
    taken as sent (no automatic decompression: coded bodies are refused, exchange/api/connections.py)."""
    return web.AppRunner(
        app,
        keepalive_timeout=settings.http_keepalive_seconds,
        shutdown_timeout=settings.shutdown_grace_seconds,
        auto_decompress=False,
    )


async def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Run the app until SIGTERM/SIGINT, idle keep-alive connections closed after the configured time.

    On a signal: stop listening, stop_rounds (exchange/api/rounds.py: finish or abandon the running round),
    drain in-flight requests for at most the grace period (then cancel them), clean up (solver, pool)."""
    runner = make_runner(await prepare(settings), settings)
    await runner.setup()
    # what start-up built (modules, routes, services, caches) leaves the collector's generations: a full collection
    # then walks only what requests allocate, not the whole process (shorter pauses in the latency tail)
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await start_site(runner, settings, sock)
        await stop.wait()
        log.info("signal received: stopping (grace %g s)", settings.shutdown_grace_seconds)
    finally:
        await runner.cleanup()
