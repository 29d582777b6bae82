"""Typed app/request keys of the console and the cookie it sets."""

from __future__ import annotations

from aiohttp import web

from exchange.services.console import ConsoleService
from exchange.services.web_sessions import BrowserSession, WebSessionService
from exchange.web.cache import Ttl

CONSOLE = web.AppKey("console", ConsoleService)
WEB_SESSIONS = web.AppKey("web_sessions", WebSessionService)
#: Verification results of audit bundles shown on the regulator page, by bundle sha256 (this process only).
VERIFIED = web.AppKey("verified_bundles", dict)
PUBLIC_MARKET = web.AppKey("public_market", Ttl)
BROWSER = web.RequestKey("browser_session", BrowserSession)
COOKIE = "hetex_session"
#: The console's pages and forms; every other path (API, /metrics...) keeps its own headers.
API_PREFIXES = ("/v1/", "/metrics", "/healthz", "/openapi.json")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
