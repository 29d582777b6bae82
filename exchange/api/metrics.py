"""Prometheus metrics per application (own registry, no import-time globals) and the /metrics route."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from exchange.api.operations import Api, Args


class ApiMetrics:
    """Request counters and latency histogram of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hetex_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.federation_refusals = Counter(
            "hetex_federation_refusals",
            "Refused peer messages by reason (counted, never stored per request)",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hetex_http_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry
        )


METRICS = web.AppKey("metrics", ApiMetrics)


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count and time every request by its route template (never by raw path: ids would explode labels)."""
    metrics = request.app[METRICS]
    start = time.perf_counter()
    response = await handler(request)
    route = _route_name(request)
    metrics.latency.labels(request.method, route).observe(time.perf_counter() - start)
    metrics.requests.labels(request.method, route, str(response.status)).inc()
    return response


routes = Api("reference")


@routes.get("/metrics", "metrics", "Prometheus metrics", response={"type": "string"}, content_type="text/plain")
async def metrics_handler(request: web.Request, args: Args) -> web.Response:
    """Prometheus text exposition."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
