"""Typed application keys (aiohttp AppKey), so handlers get services without globals."""

from __future__ import annotations

from aiohttp import web

from exchange.composition import Services

SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    """The services of the app handling `request`."""
    return request.app[SERVICES]
