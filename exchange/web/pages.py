"""Console pages: parse the request, call the services, render a template (no SQL here)."""

from __future__ import annotations

import asyncio
import functools
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from exchange.api.keys import SERVICES, services
from exchange.api.problems import status_for
from exchange.api.responses import path_id
from exchange.audit.verify import verify_bundle
from exchange.services.console import QuoteLine
from exchange.services.web_sessions import BrowserSession
from exchange.web import charts
from exchange.web.browser import browser_form, current, form_session, same_origin, served_over_https
from exchange.web.keys import CONSOLE, COOKIE, PUBLIC_MARKET, VERIFIED, WEB_SESSIONS
from federation.keys import VerifyKey
from identifiers.errors import HetexError, ValidationError

routes = web.RouteTableDef()
Page = Callable[[web.Request], Awaitable[web.StreamResponse]]
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PARTY_PAGES = {"provider": "/provider", "buyer": "/buyer", "regulator": "/regulator", "operator": "/operator"}


def page(handler: Page) -> Page:
    """Render a domain error as an HTML page with its status (4xx), never a traceback."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except HetexError as exc:
            return render(request, "error.html", {"error": exc}, status=status_for(exc))

    return wrapped


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """A template with the common context (who is signed in, their CSRF token)."""
    browser: BrowserSession | None = context.get("browser")
    context.setdefault("me", browser.principal if browser else None)
    context.setdefault("csrf", browser.csrf if browser else "")
    context.setdefault("pages", PARTY_PAGES)
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def signed_in(request: web.Request, role: str) -> BrowserSession:
    """The session of a party page: none -> 303 to /login; another role -> 403 page."""
    browser = await current(request)
    if browser is None:
        raise web.HTTPSeeOther("/login?next=" + PARTY_PAGES[role])
    browser.principal.require_role(role, action=f"open the {role} page")
    return browser


def opt_decimal(request: web.Request, name: str, lo: Decimal, hi: Decimal) -> Decimal | None:
    """An optional decimal query parameter within [lo, hi], or ValidationError naming it."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValidationError(f"{name} must be a number", field=name) from None
    if not value.is_finite() or not lo <= value <= hi:
        raise ValidationError(f"{name} must be between {lo} and {hi}", field=name)
    return value


# ------------------------------------------------------------------------------------------ public


@routes.get("/")
@page
async def market_page(request: web.Request) -> web.StreamResponse:
    """Public market: price heat table, price history, depth, rounds, capacity map, catalogue, checkpoint."""
    context = await request.app[PUBLIC_MARKET].get(lambda: public_market(request.app))
    return render(request, "market.html", {**context, "browser": await current(request)})


async def public_market(app: web.Application) -> dict[str, Any]:
    """Everything the public page shows (the same for every viewer; cached PUBLIC_MARKET_SECONDS)."""
    svc = app[SERVICES]
    console = app[CONSOLE]
    market, snapshot = await svc.rounds.market_and_snapshot()
    history = await console.price_history()
    capacity = await console.capacity_by_region()
    rounds = await svc.rounds.list_rounds(limit=10)
    audits = await console.audit_results([r["id"] for r in rounds])
    for r in rounds:
        r["audit_ok"] = audits.get(r["id"])
    checkpoint = await svc.ledger.latest_checkpoint()
    return {
        "market": market,
        "heat": heat_table(market),
        "history": {f: charts.line_chart(series) for f, series in history.items()},
        "depth": depth_by_model(snapshot, svc.catalogue),
        "rounds": rounds,
        "regions": region_map(svc.regions, capacity),
        "catalogue": sorted(svc.catalogue, key=lambda m: (m.vendor, m.code)),
        "checkpoint": checkpoint.note if checkpoint else None,
    }


def heat_table(market: dict[str, Any]) -> dict[str, Any]:
    """Regions x families with the last clearing price (fen per device-hour) and a heat level per cell."""
    cells: dict[tuple[str, str], Decimal] = {}
    for row in market["classes"]:
        price = row.get("last_price")
        if price:
            cells[(row["region"], row["family"])] = Decimal(price["price_fen_per_device_hour"])
    regions = sorted({r["region"] for r in market["classes"]})
    families = sorted({r["family"] for r in market["classes"]})
    lo = min(cells.values(), default=Decimal(0))
    hi = max(cells.values(), default=Decimal(0))
    return {
        "regions": regions,
        "families": families,
        "cells": {k: (v, charts.heat_level(v, lo, hi)) for k, v in cells.items()},
    }


def depth_by_model(snapshot: Any, catalogue: Any) -> list[dict[str, Any]]:
    """Per model: devices offered free now, and open demand (an order counts in every model it accepts)."""
    offered: dict[str, int] = defaultdict(int)
    for p in snapshot.pools:
        if p.window_start is not None and p.window_start > snapshot.now:
            continue
        held = sum(r.devices for r in p.reserved if r.start <= snapshot.now < r.end)
        offered[p.model] += max(0, p.devices - held)
    demanded: dict[str, int] = defaultdict(int)
    for o in snapshot.orders:
        for code in o.models:
            demanded[code] += o.quantity_devices or 0
    models = sorted(set(offered) | set(demanded))
    biggest = max([*offered.values(), *demanded.values(), 1])
    return [
        {
            "model": m,
            "family": catalogue.get(m).family if m in catalogue else "",
            "offered": offered.get(m, 0),
            "demanded": demanded.get(m, 0),
            "offered_pct": round(100 * offered.get(m, 0) / biggest),
            "demanded_pct": round(100 * demanded.get(m, 0) / biggest),
        }
        for m in models
    ]


def region_map(regions: Any, capacity: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Every served region with its map position, names and registered capacity."""
    biggest = max([c["devices"] for c in capacity.values()] or [0])
    out = []
    for r in regions:
        cap = capacity.get(r.code, {"sites": 0, "pools": 0, "devices": 0})
        x, y = charts.map_xy(r.lon, r.lat)
        out.append(
            {
                "code": r.code,
                "name": r.name,
                "name_zh": r.name_zh,
                "hub": r.is_hub,
                "x": x,
                "y": y,
                "radius": charts.bubble_radius(cap["devices"], biggest),
                **cap,
            }
        )
    return out


# ------------------------------------------------------------------------------------------ sign-in


@routes.get("/login")
@page
async def login_help(request: web.Request) -> web.StreamResponse:
    """How to sign in: `hetex login --web` prints a one-time link."""
    base = services(request).settings.public_base_url or f"{request.scheme}://{request.host}"
    return render(request, "login.html", {"browser": await current(request), "code": None, "request_base": base})


@routes.get("/login/{code}")
@page
async def login_link(request: web.Request) -> web.StreamResponse:
    """The one-time link: a button that posts the code (a GET never signs in, so link previews cannot)."""
    code = request.match_info["code"]
    if not 20 <= len(code) <= 100 or not code.replace("-", "").replace("_", "").isalnum() or not code.isascii():
        raise ValidationError("this is not a sign-in link", field="code")
    return render(request, "login.html", {"browser": None, "code": code})


@routes.post("/login")
@browser_form
@page
async def login(request: web.Request) -> web.StreamResponse:
    """Redeem a one-time code: set the session cookie and go to the participant's page."""
    same_origin(request)
    form = await request.post()
    code = form.get("code")
    if not isinstance(code, str) or not code:
        raise ValidationError("the sign-in code is missing", field="code")
    token, browser = await request.app[WEB_SESSIONS].redeem(code, request.headers.get("User-Agent"))
    response = web.HTTPSeeOther(PARTY_PAGES.get(browser.principal.role, "/"))
    response.set_cookie(
        COOKIE,
        token,
        max_age=max(0, browser.expires_at - _now()),
        httponly=True,
        samesite="Strict",
        secure=served_over_https(request),
        path="/",
    )
    raise response


@routes.post("/logout")
@browser_form
@page
async def logout(request: web.Request) -> web.StreamResponse:
    """Revoke this browser's session and clear the cookie."""
    browser = await form_session(request)
    await request.app[WEB_SESSIONS].revoke(browser.principal, browser.id)
    response = web.HTTPSeeOther("/")
    response.del_cookie(COOKIE, path="/")
    raise response


@routes.post("/sessions/{id}/revoke")
@browser_form
@page
async def revoke_session(request: web.Request) -> web.StreamResponse:
    """Revoke one of the participant's console sessions from a party page."""
    browser = await form_session(request)
    await request.app[WEB_SESSIONS].revoke(browser.principal, path_id(request))
    raise web.HTTPSeeOther(PARTY_PAGES.get(browser.principal.role, "/"))


def _now() -> int:
    from exchange.storage.base import now_s

    return now_s()


# ------------------------------------------------------------------------------------------ provider


@routes.get("/provider")
@page
async def provider_page(request: web.Request) -> web.StreamResponse:
    """Sites and pools with heartbeat status, utilization, offers, contracts to confirm, usage, earnings."""
    browser = await signed_in(request, "provider")
    who = browser.principal
    svc = services(request)
    console = request.app[CONSOLE]
    contracts = await svc.contracts.list_for(who, limit=500)
    return render(
        request,
        "provider.html",
        {
            "browser": browser,
            "sites": await console.provider_sites(who),
            "utilization": await console.utilization(who),
            "offers": (await svc.registration.list_offers(who)).model_dump()["offers"],
            "contracts": contracts,
            "usage": await console.usage_counts([c["id"] for c in contracts]),
            "earnings": await console.settled_by_mode(who),
            "sessions": await request.app[WEB_SESSIONS].list_for(who),
        },
    )


@routes.post("/provider/contracts/{id}/confirm")
@browser_form
@page
async def confirm_contract(request: web.Request) -> web.StreamResponse:
    """The provider confirms a pending contract (the same service call as POST /v1/contracts/{id}/confirm)."""
    browser = await form_session(request, "provider")
    await services(request).contracts.confirm(browser.principal, path_id(request))
    raise web.HTTPSeeOther("/provider#contracts")


# ------------------------------------------------------------------------------------------ buyer


@routes.get("/buyer")
@page
async def buyer_page(request: web.Request) -> web.StreamResponse:
    """Orders with fills and feasibility flags, contracts, spend, and the quote form (with its answer)."""
    browser = await signed_in(request, "buyer")
    who = browser.principal
    svc = services(request)
    orders = (await svc.orders.list_orders(who, limit=100)).model_dump()["orders"]
    contracts = await svc.contracts.list_for(who, limit=500)
    fills: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in contracts:
        fills[c["order_id"]].append(c)
    quote = await quote_lines(request) if request.query.get("model") or request.query.get("family") else None
    now = _now()
    accruing = sum(
        (
            Decimal(c["buyer_price_fen"]) * c["devices"] * Decimal(max(0, min(now, c["end_at"]) - c["start_at"])) / 3600
            for c in contracts
            if c["status"] == "confirmed"
        ),
        Decimal(0),
    )
    return render(
        request,
        "buyer.html",
        {
            "browser": browser,
            "orders": orders,
            "fills": fills,
            "contracts": contracts,
            "spend": await request.app[CONSOLE].settled_by_mode(who),
            "accruing_fen": accruing,
            "quote": quote,
            "query": request.query,
            "models": sorted(svc.catalogue.codes),
            "families": sorted(svc.catalogue.families),
            "region_codes": sorted(svc.regions.codes),
            "sessions": await request.app[WEB_SESSIONS].list_for(who),
        },
    )


async def quote_lines(request: web.Request) -> list[QuoteLine]:
    """Live pools that could serve the draft order now, cheapest ask first."""
    svc = services(request)
    model = request.query.get("model", "").strip().upper() or None
    family = request.query.get("family", "").strip() or None
    region = request.query.get("region", "").strip().upper() or None
    if model is not None and model not in svc.catalogue:
        raise ValidationError(f"unknown accelerator model {model[:40]!r}", field="model")
    if family is not None and family not in svc.catalogue.families:
        raise ValidationError(f"unknown accelerator family {family[:40]!r}", field="family")
    if region is not None and region not in svc.regions:
        raise ValidationError(f"unknown region {region[:16]!r}", field="region")
    devices = int(opt_decimal(request, "devices", Decimal(1), Decimal(100_000)) or 1)
    hours = opt_decimal(request, "hours", Decimal("0.25"), Decimal(8760)) or Decimal(1)
    snapshot = await svc.rounds.market_snapshot()
    lines = []
    for p in snapshot.pools:
        if model is not None and p.model != model:
            continue
        if family is not None and p.family != family:
            continue
        if region is not None and p.region != region:
            continue
        held = sum(r.devices for r in p.reserved if r.start <= snapshot.now < r.end)
        free = p.devices - held
        if free < devices:
            continue
        total = int(Decimal(p.ask_fen) * devices * hours)
        lines.append(QuoteLine(p.region, p.model, p.family, free, p.ask_fen, total))
    return sorted(lines, key=lambda q: (q.ask_fen, q.region, q.model))


@routes.post("/buyer/orders/{id}/cancel")
@browser_form
@page
async def cancel_order(request: web.Request) -> web.StreamResponse:
    """The buyer cancels an open order (the same service call as POST /v1/orders/{id}/cancel)."""
    browser = await form_session(request, "buyer")
    await services(request).orders.cancel(browser.principal, path_id(request))
    raise web.HTTPSeeOther("/buyer#orders")


# ------------------------------------------------------------------------------------------ regulator


@routes.get("/regulator")
@page
async def regulator_page(request: web.Request) -> web.StreamResponse:
    """Cross-region flows, domestic vs imported share, totals by billing mode, audit exports."""
    browser = await signed_in(request, "regulator")
    who = browser.principal
    console = request.app[CONSOLE]
    flows = await console.flows()
    share = []
    for at, sides in flows["daily"].items():
        total = sides["domestic"] + sides["imported"]
        share.append(
            {
                "day": at,
                "domestic": sides["domestic"],
                "imported": sides["imported"],
                "share": (sides["domestic"] / total) if total else None,
                "pct": round(100 * sides["domestic"] / total) if total else 0,
            }
        )
    return render(
        request,
        "regulator.html",
        {
            "browser": browser,
            "flows": flows,
            "share": share,
            "settled": await console.settled_by_mode(who),
            "exports": await console.exports_of(who),
            "verified": request.app[VERIFIED],
            "sessions": await request.app[WEB_SESSIONS].list_for(who),
        },
    )


@routes.get("/regulator/exports/{id}/bundle")
@page
async def export_bundle(request: web.Request) -> web.StreamResponse:
    """Download a finished audit bundle of this regulator (the file GET /v1/audit/exports/{id}/bundle serves)."""
    browser = await signed_in(request, "regulator")
    path = await services(request).audit.bundle_path(browser.principal.id, path_id(request))
    return web.FileResponse(
        path, headers={"Content-Disposition": f'attachment; filename="{path.name}"', "Cache-Control": "no-store"}
    )


@routes.get("/regulator/exports/{id}/verify")
@page
async def verify_export(request: web.Request) -> web.StreamResponse:
    """Verify a finished bundle of this regulator as `hetex audit verify` does, trusting this exchange's keys;
    the result is kept per bundle digest and shown in the exports table."""
    browser = await signed_in(request, "regulator")
    svc = services(request)
    export_id = path_id(request)
    status = await svc.audit.status(browser.principal.id, export_id)
    path = await svc.audit.bundle_path(browser.principal.id, export_id)
    trusted = [VerifyKey.from_base64(k.public_key) for k in await svc.identity.keys()]
    report = await asyncio.to_thread(verify_bundle, path, trusted)
    result = request.app[VERIFIED][status.bundle_sha256 or export_id] = {
        "ok": report.ok,
        "records": report.records,
        "signatures_checked": report.signatures_checked,
        "proofs_checked": report.proofs_checked,
        "problems": [{"code": p.code, "message": p.message} for p in report.problems[:20]],
        "seconds": round(report.seconds, 2),
    }
    return render(request, "verify.html", {"browser": browser, "export_id": export_id, "report": result}, status=200)


# ------------------------------------------------------------------------------------------ operator


@routes.get("/operator")
@page
async def operator_page(request: web.Request) -> web.StreamResponse:
    """Rounds (run one, see its audit), peers and their consistency, exchange keys and rotation history."""
    browser = await signed_in(request, "operator")
    svc = services(request)
    rounds = await svc.rounds.list_rounds(limit=20)
    selected = None
    if request.query.get("round"):
        selected = await svc.rounds.get(_query_id(request, "round"), browser.principal)
    return render(
        request,
        "operator.html",
        {
            "browser": browser,
            "rounds": rounds,
            "selected": selected,
            "peers": await svc.federation.peers.peers_view(),
            "keys": [k.to_json() for k in await svc.identity.keys()],
            "sessions": await request.app[WEB_SESSIONS].list_for(browser.principal),
        },
    )


def _query_id(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not UUID_TEXT.fullmatch(value):
        raise ValidationError(f"{name}: not an id (UUID, lower-case hex)", field=name)
    return value


@routes.post("/operator/rounds")
@browser_form
@page
async def run_round(request: web.Request) -> web.StreamResponse:
    """Run one clearing round now (operator), then show its audit."""
    await form_session(request, "operator")
    summary = await services(request).rounds.run_round("operator")  # RoundBusyError renders as a 409 page
    raise web.HTTPSeeOther(f"/operator?round={summary.round_id}#round")
