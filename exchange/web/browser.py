"""Browser authentication of console pages: the session cookie, role checks, CSRF and same-origin forms."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from yarl import URL

from exchange.api.keys import services
from exchange.services.principals import Principal
from exchange.services.web_sessions import BrowserSession, CsrfError, check_csrf
from exchange.web.keys import BROWSER, COOKIE, WEB_SESSIONS

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])
BROWSER_FORM = "_hetex_browser_form"


def browser_form(handler: H) -> H:
    """Mark a POST handler authenticated by the session cookie + CSRF token instead of a request signature
    (exchange.api.auth lets such unsigned requests through to it; the handler must call `form_session`)."""
    setattr(handler, BROWSER_FORM, True)
    return handler


async def current(request: web.Request) -> BrowserSession | None:
    """The live session of this browser, or None (memoised on the request)."""
    if BROWSER in request:
        return request[BROWSER]
    found = await request.app[WEB_SESSIONS].resolve(request.cookies.get(COOKIE))
    if found is not None:
        request[BROWSER] = found
    return found


def own_origins(request: web.Request) -> set[str]:
    """This exchange's origins: as the request reached it, and its configured public base URL (a TLS proxy)."""
    mine = {f"{request.scheme}://{request.host}"}
    public = services(request).settings.public_base_url
    if public:
        url = URL(public)
        if url.scheme and url.host:
            mine.add(f"{url.scheme}://{url.raw_authority}")
    return mine


def served_over_https(request: web.Request) -> bool:
    """True when the browser talks HTTPS to us (directly, or through the configured public base URL)."""
    public = services(request).settings.public_base_url or ""
    return request.secure or public.startswith("https://")


def same_origin(request: web.Request) -> None:
    """Refuse a form posted from another site (Origin, else Sec-Fetch-Site), on top of SameSite=Strict."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        if origin not in own_origins(request):
            raise CsrfError(f"form posted from another origin ({origin[:100]})", field="Origin")
    elif request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise CsrfError("form posted from another site", field="Sec-Fetch-Site")


async def form_session(request: web.Request, *roles: str) -> BrowserSession:
    """A state-changing browser form: same origin, a live session, the CSRF token, and a role allowed."""
    same_origin(request)
    browser = await current(request)
    if browser is None:
        raise web.HTTPSeeOther("/login")
    form = await request.post()
    token = form.get("csrf")
    check_csrf(browser, token if isinstance(token, str) else None)
    if roles:
        browser.principal.require_role(*roles, action="do this from the console")
    return browser


def principal_of(browser: BrowserSession) -> Principal:
    """The participant of a browser session."""
    return browser.principal
