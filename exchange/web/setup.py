"""Wires the console into the app: templates, static files, pages, sign-in API and security headers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from exchange.api.auth import require_principal
from exchange.api.keys import SERVICES, services
from exchange.api.responses import path_id
from exchange.services.console import ConsoleService
from exchange.services.web_sessions import WebSessionService
from exchange.web import pages
from exchange.web.cache import PUBLIC_MARKET_SECONDS, Ttl
from exchange.web.format import FILTERS
from exchange.web.keys import API_PREFIXES, CONSOLE, CSP, PUBLIC_MARKET, VERIFIED, WEB_SESSIONS

HERE = Path(__file__).parent
api = web.RouteTableDef()


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


@api.post("/console/sessions")
async def start_session(request: web.Request) -> web.Response:
    """A signed request (any console role) gets a one-time sign-in link for a browser (`hetex login --web`)."""
    who = require_principal(request)
    started = await request.app[WEB_SESSIONS].start(who)
    base = services(request).settings.public_base_url or f"{request.scheme}://{request.host}"
    return _json(
        {
            "session_id": started.session_id,
            "link": f"{base.rstrip('/')}/login/{started.code}",
            "link_expires_at": started.code_expires_at,
            "role": who.role,
        },
        201,
    )


@api.get("/console/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """The signer's console sessions (no secrets)."""
    who = require_principal(request)
    return _json({"sessions": await request.app[WEB_SESSIONS].list_for(who)})


@api.post("/console/sessions/{id}/revoke")
async def revoke_session(request: web.Request) -> web.Response:
    """Revoke one of the signer's console sessions."""
    who = require_principal(request)
    return _json(await request.app[WEB_SESSIONS].revoke(who, path_id(request)))


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Strict CSP and friends on every console response (the API keeps its own headers)."""
    if request.path.startswith(API_PREFIXES):
        return
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")


def _static_urls() -> Callable[[str], str]:
    """static(name) -> /static/name?v=<content hash>, so a changed file is never served stale."""
    versions = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in (HERE / "static").iterdir() if p.is_file()
    }

    def static(name: str) -> str:
        return f"/static/{name}?v={versions.get(name, '0')}"

    return static


def setup_web(app: web.Application) -> None:
    """Add the console to an app that already holds SERVICES."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(FILTERS)
    env.globals["static"] = _static_urls()
    svc = app[SERVICES]
    app[CONSOLE] = ConsoleService(svc.sessions, svc.catalogue, svc.regions, svc.settings.heartbeat_timeout_seconds)
    app[WEB_SESSIONS] = WebSessionService(svc.sessions)
    app[VERIFIED] = {}
    app[PUBLIC_MARKET] = Ttl(PUBLIC_MARKET_SECONDS)
    app.router.add_routes(pages.routes)
    app.router.add_routes(api)
    app.router.add_static("/static/", HERE / "static")
    app.on_response_prepare.append(_security_headers)
