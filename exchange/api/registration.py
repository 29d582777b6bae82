"""Handlers for the provider node registration API: sites, pools, offers, heartbeats."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import NONCE_CLAIM, nonce_free, signed_request
from exchange.api.keys import services
from exchange.api.operations import Api, Args
from exchange.api.params import ID, POOL_CRI, SITE_CRI, ChoiceParam
from exchange.api.responses import model_response
from exchange.services.registration import (
    HeartbeatView,
    OfferAmendment,
    OfferList,
    OfferPost,
    OfferView,
    PoolDeclaration,
    PoolView,
    SiteDetail,
    SiteList,
    SiteRegistration,
    SiteView,
)

routes = Api("registration")

OFFER_STATUS = ChoiceParam("status", "query", "only offers in this state", choices=("open", "withdrawn"))
SITE_STATUS = ChoiceParam("status", "query", "only sites in this state", choices=("active", "tombstoned"))


@routes.post(
    "/v1/sites",
    "addSite",
    "Register a data-centre node; answers with its site CRI",
    ok=201,
    response=SiteView,
    body=SiteRegistration,
    signed=True,
    errors=(403, 413, 422),
)
async def add_site(request: web.Request, args: Args) -> web.Response:
    """Register a data-centre node; answers with its site CRI."""
    svc = services(request).registration
    return model_response(await svc.register_site(args.who, args.body(SiteRegistration), signed_request(request)), 201)


@routes.get(
    "/v1/sites",
    "listSites",
    "The caller's sites with their pools (provider)",
    params=(SITE_STATUS,),
    response=SiteList,
    signed=True,
    errors=(403, 422),
)
async def list_sites(request: web.Request, args: Args) -> web.Response:
    """The caller's sites with their pools."""
    return model_response(await services(request).registration.list_sites(args.who, args.get(SITE_STATUS)))


@routes.get(
    "/v1/sites/{cri}", "getSite", "A site with its pools", params=(SITE_CRI,), response=SiteDetail, errors=(404, 422)
)
async def get_site(request: web.Request, args: Args) -> web.Response:
    """A site (or tombstone) with its pools."""
    return model_response(await services(request).registration.get_site(args[SITE_CRI]))


@nonce_free
@routes.post(
    "/v1/sites/{cri}/heartbeat",
    "heartbeat",
    "The site is alive: its offers stay matchable for the heartbeat timeout",
    params=(SITE_CRI,),
    response=HeartbeatView,
    signed=True,
    errors=(403, 404, 409, 422),
)
async def heartbeat(request: web.Request, args: Args) -> web.Response:
    """The site is alive at the signature's `created`: its offers stay matchable. Nonce-free: a replay changes
    nothing (exchange.api.auth.nonce_free)."""
    view = await services(request).registration.heartbeat(args.who, args[SITE_CRI], request[NONCE_CLAIM].created)
    return model_response(view)


@routes.delete(
    "/v1/sites/{cri}",
    "deregisterSite",
    "Deregister a site: it and its pools become tombstones, open offers are withdrawn",
    params=(SITE_CRI,),
    response=SiteView,
    signed=True,
    errors=(403, 404, 409, 422),
)
async def deregister_site(request: web.Request, args: Args) -> web.Response:
    """Deregister a site: tombstones for it and its pools, open offers withdrawn."""
    svc = services(request).registration
    return model_response(await svc.deregister_site(args.who, args[SITE_CRI], signed_request(request)))


@routes.post(
    "/v1/sites/{cri}/pools",
    "addPool",
    "Declare a pool of identical accelerators; answers with its pool CRI",
    params=(SITE_CRI,),
    ok=201,
    response=PoolView,
    body=PoolDeclaration,
    signed=True,
    errors=(403, 404, 409, 413, 422),
)
async def add_pool(request: web.Request, args: Args) -> web.Response:
    """Declare a pool at a site; answers with its pool CRI."""
    svc = services(request).registration
    pool = await svc.declare_pool(args.who, args[SITE_CRI], args.body(PoolDeclaration), signed_request(request))
    return model_response(pool, 201)


@routes.get(
    "/v1/pools/{cri}", "getPool", "A pool (or its tombstone)", params=(POOL_CRI,), response=PoolView, errors=(404, 422)
)
async def get_pool(request: web.Request, args: Args) -> web.Response:
    """A pool (or tombstone)."""
    return model_response(await services(request).registration.get_pool(args[POOL_CRI]))


@routes.delete(
    "/v1/pools/{cri}",
    "tombstonePool",
    "Tombstone a pool; its open offers are withdrawn",
    params=(POOL_CRI,),
    response=PoolView,
    signed=True,
    errors=(403, 404, 409, 422),
)
async def tombstone_pool(request: web.Request, args: Args) -> web.Response:
    """Tombstone a pool; its open offers are withdrawn."""
    svc = services(request).registration
    return model_response(await svc.tombstone_pool(args.who, args[POOL_CRI], signed_request(request)))


@routes.post(
    "/v1/offers",
    "postOffer",
    "Offer devices of a pool",
    ok=201,
    response=OfferView,
    body=OfferPost,
    signed=True,
    errors=(403, 404, 409, 413, 422),
)
async def post_offer(request: web.Request, args: Args) -> web.Response:
    """Offer capacity from a pool."""
    svc = services(request).registration
    return model_response(await svc.post_offer(args.who, args.body(OfferPost), signed_request(request)), 201)


@routes.get(
    "/v1/offers",
    "listOffers",
    "The caller's offers",
    params=(OFFER_STATUS,),
    response=OfferList,
    signed=True,
    errors=(403, 422),
)
async def list_offers(request: web.Request, args: Args) -> web.Response:
    """The caller's offers."""
    return model_response(await services(request).registration.list_offers(args.who, args.get(OFFER_STATUS)))


@routes.get(
    "/v1/offers/{id}",
    "getOffer",
    "One of the caller's open offers (a withdrawn one is 410 offer_withdrawn; the offer list and its fills keep"
    " its history)",
    params=(ID,),
    response=OfferView,
    signed=True,
    errors=(403, 404, 410, 422),
)
async def get_offer(request: web.Request, args: Args) -> web.Response:
    """One of the caller's offers."""
    return model_response(await services(request).registration.get_offer(args.who, args[ID]))


@routes.patch(
    "/v1/offers/{id}",
    "amendOffer",
    "Amend an open offer (version + 1)",
    params=(ID,),
    response=OfferView,
    body=OfferAmendment,
    signed=True,
    errors=(403, 404, 409, 413, 422),
)
async def amend_offer(request: web.Request, args: Args) -> web.Response:
    """Amend an open offer (version + 1)."""
    svc = services(request).registration
    return model_response(await svc.amend_offer(args.who, args[ID], args.body(OfferAmendment), signed_request(request)))


@routes.delete(
    "/v1/offers/{id}",
    "withdrawOffer",
    "Withdraw an open offer",
    params=(ID,),
    response=OfferView,
    signed=True,
    errors=(403, 404, 409, 422),
)
async def withdraw_offer(request: web.Request, args: Args) -> web.Response:
    """Withdraw an open offer."""
    svc = services(request).registration
    return model_response(await svc.withdraw_offer(args.who, args[ID], signed_request(request)))
