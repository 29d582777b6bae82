"""Handlers for the provider node registration API: sites, pools, offers, heartbeats."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import require_principal, signed_request
from exchange.api.keys import services
from exchange.api.params import CRI, ChoiceParam
from exchange.api.parsing import parse_body
from exchange.api.responses import model_response, path_id
from exchange.services.registration import OfferAmendment, OfferPost, PoolDeclaration, SiteRegistration

routes = web.RouteTableDef()

OFFER_STATUS = ChoiceParam("status", "query", "only offers in this state", choices=("open", "withdrawn"))
SITE_STATUS = ChoiceParam("status", "query", "only sites in this state", choices=("active", "tombstoned"))


@routes.post("/v1/sites")
async def add_site(request: web.Request) -> web.Response:
    """Register a data-centre node; answers with its site CRI."""
    who = require_principal(request)
    body = await parse_body(request, SiteRegistration)
    return model_response(await services(request).registration.register_site(who, body, signed_request(request)), 201)


@routes.get("/v1/sites")
async def list_sites(request: web.Request) -> web.Response:
    """The caller's sites with their pools."""
    who = require_principal(request)
    status = SITE_STATUS.parse(request)
    return model_response(await services(request).registration.list_sites(who, status))


@routes.get("/v1/sites/{cri}")
async def get_site(request: web.Request) -> web.Response:
    """A site (or tombstone) with its pools."""
    return model_response(await services(request).registration.get_site(CRI.value(request)))


@routes.post("/v1/sites/{cri}/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    """The site is alive: its offers stay matchable."""
    who = require_principal(request)
    return model_response(await services(request).registration.heartbeat(who, CRI.value(request)))


@routes.delete("/v1/sites/{cri}")
async def deregister_site(request: web.Request) -> web.Response:
    """Deregister a site: tombstones for it and its pools, open offers withdrawn."""
    who = require_principal(request)
    svc = services(request).registration
    return model_response(await svc.deregister_site(who, CRI.value(request), signed_request(request)))


@routes.post("/v1/sites/{cri}/pools")
async def add_pool(request: web.Request) -> web.Response:
    """Declare a pool at a site; answers with its pool CRI."""
    who = require_principal(request)
    body = await parse_body(request, PoolDeclaration)
    svc = services(request).registration
    return model_response(await svc.declare_pool(who, CRI.value(request), body, signed_request(request)), 201)


@routes.get("/v1/pools/{cri}")
async def get_pool(request: web.Request) -> web.Response:
    """A pool (or tombstone)."""
    return model_response(await services(request).registration.get_pool(CRI.value(request)))


@routes.delete("/v1/pools/{cri}")
async def tombstone_pool(request: web.Request) -> web.Response:
    """Tombstone a pool; its open offers are withdrawn."""
    who = require_principal(request)
    svc = services(request).registration
    return model_response(await svc.tombstone_pool(who, CRI.value(request), signed_request(request)))


@routes.post("/v1/offers")
async def post_offer(request: web.Request) -> web.Response:
    """Offer capacity from a pool."""
    who = require_principal(request)
    body = await parse_body(request, OfferPost)
    return model_response(await services(request).registration.post_offer(who, body, signed_request(request)), 201)


@routes.get("/v1/offers")
async def list_offers(request: web.Request) -> web.Response:
    """The caller's offers."""
    who = require_principal(request)
    status = OFFER_STATUS.parse(request)
    return model_response(await services(request).registration.list_offers(who, status))


@routes.get("/v1/offers/{id}")
async def get_offer(request: web.Request) -> web.Response:
    """One of the caller's offers."""
    who = require_principal(request)
    return model_response(await services(request).registration.get_offer(who, path_id(request)))


@routes.patch("/v1/offers/{id}")
async def amend_offer(request: web.Request) -> web.Response:
    """Amend an open offer (version + 1)."""
    who = require_principal(request)
    offer_id = path_id(request)
    body = await parse_body(request, OfferAmendment)
    svc = services(request).registration
    return model_response(await svc.amend_offer(who, offer_id, body, signed_request(request)))


@routes.delete("/v1/offers/{id}")
async def withdraw_offer(request: web.Request) -> web.Response:
    """Withdraw an open offer."""
    who = require_principal(request)
    svc = services(request).registration
    return model_response(await svc.withdraw_offer(who, path_id(request), signed_request(request)))
