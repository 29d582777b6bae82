"""Builds the aiohttp application from services: middlewares, routes, lifecycle."""

from __future__ import annotations

from aiohttp import web

from exchange.api import duties, ledger, rounds
from exchange.api.auth import KEY_CACHE, KeyCache, auth_middleware
from exchange.api.boundary import body_middleware, boundary_middleware
from exchange.api.connections import body_timeout_middleware
from exchange.api.key_changes import listen_for_key_changes
from exchange.api.keys import SERVICES
from exchange.api.metrics import METRICS, ApiMetrics, metrics_middleware
from exchange.api.openapi import TABLES
from exchange.api.problems import problem_middleware
from exchange.composition import Services
from exchange.web import setup_web

ROUTE_TABLES = TABLES


def create_app(svc: Services) -> web.Application:
    """The HTTP application for one set of services (the caller owns their lifecycle)."""
    body_timeout = body_timeout_middleware(svc.settings.http_body_timeout_seconds)
    middlewares = [
        metrics_middleware,
        problem_middleware,
        body_timeout,
        boundary_middleware,  # path/query values; a body only when authentication needs it
        auth_middleware,
        body_middleware,  # every other body, once its signature verified
    ]
    app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
    app[SERVICES] = svc
    app[METRICS] = ApiMetrics()
    app[KEY_CACHE] = cache = KeyCache()
    svc.participants.key_changed.append(cache.drop)  # this process's own status changes
    app.cleanup_ctx.append(listen_for_key_changes)  # other processes' (PostgreSQL NOTIFY)
    for table in ROUTE_TABLES:
        app.router.add_routes(table)
    setup_web(app)  # the web console at / (exchange/web)
    app.on_startup.append(ledger.load_exchange_key)
    app.cleanup_ctx.append(rounds.warm_solver)
    duties.register_duties(svc)  # run by the duties lease in one process of those sharing the database
    app.cleanup_ctx.append(duties.lease_keeper)
    app.on_shutdown.append(rounds.stop_rounds)
    return app
