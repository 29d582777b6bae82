"""Handlers for the federation API: peer messages (signed by a peer exchange key), signed and public reads.

Peer POST routes verify their own signatures (Federation.handle): the auth middleware lets POSTs
under PEER_PATH_PREFIX through to these handlers. GETs go through the ordinary participant authentication:
contracts, holds, mirrored records, events and peers need a request signed by the operator or by a peer
exchange (its key is registered as a participant of role peer when the peer is added), and a peer sees only
what concerns it. Identity, keys, summaries, checkpoint, consistency and stats stay public: they are what
the exchange publishes for anyone to verify (signed documents, log proofs, aggregate counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from exchange.api.auth import require_principal, target_uri
from exchange.api.keys import SERVICES, services
from exchange.api.metrics import METRICS
from exchange.api.params import ChoiceParam, IntParam, TextParam, uuid_param
from exchange.storage.federation import HOLD_STATUSES
from identifiers.errors import AuthenticationError

routes = web.RouteTableDef()

PEER_PATH_PREFIX = "/v1/federation/"
MAX_SIZE = (1 << 62) - 1

HOLD_ID = uuid_param("id", "path", "hold id (UUID, lower-case)")
CONSISTENCY_QUERY = (
    IntParam("from", "query", "older tree size", required=True, lo=1, hi=MAX_SIZE),
    IntParam("to", "query", "newer tree size", required=True, lo=1, hi=MAX_SIZE),
)
PEER = TextParam(
    "peer",
    "query",
    "only with this peer (its authority)",
    pattern=r"^[A-Z0-9]{1,8}$",
    max_length=8,
    hint="an authority code (1-8 of A-Z, 0-9)",
)
AUTHORITY = TextParam(
    "authority",
    "path",
    "a peer exchange's authority code",
    pattern=r"^[A-Z0-9]{1,8}$",
    max_length=8,
    hint="an authority code (1-8 of A-Z, 0-9)",
)
CONTRACTS_QUERY = (PEER, uuid_param("order_id", "query", "one order"))
EVIDENCE_QUERY = (PEER,)
HOLDS_QUERY = (ChoiceParam("status", "query", "only holds in this state", choices=HOLD_STATUSES),)
MIRRORED_QUERY = (uuid_param("contract_id", "query", "one contract"),)
EVENTS_QUERY = (
    IntParam("limit", "query", "at most this many (default 100)", lo=1, hi=1000),
    TextParam(
        "kind",
        "query",
        "only events of this kind",
        pattern=r"^[a-z_]{1,40}$",
        max_length=40,
        hint="an event kind (lower-case letters and _)",
    ),
)


def request_url(request: web.Request) -> str:
    """The @target-uri as signed: this exchange's configured origin + path and query (exchange.api.auth)."""
    settings = services(request).settings
    return target_uri(request, settings.public_base_url, dev=settings.dev)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str, ensure_ascii=False))


async def _peer_post(request: web.Request, kind: str, hold_id: str | None = None) -> web.Response:
    body = await request.read()
    try:
        result = await services(request).federation.handle(
            kind, request.method, request_url(request), list(request.headers.items()), body, hold_id=hold_id
        )
    except AuthenticationError as exc:
        request.app[METRICS].federation_refusals.labels(str(exc.details.get("reason", exc.code))).inc()
        raise
    return _json(result)


@routes.post("/v1/federation/summaries")
async def post_summary(request: web.Request) -> web.Response:
    """A peer pushes its signed capacity summary."""
    return await _peer_post(request, "capacity_summary")


@routes.post("/v1/federation/orders")
async def post_order(request: web.Request) -> web.Response:
    """A peer offers an order; answered with a hold (or a refusal). Idempotent by (origin, message id)."""
    return await _peer_post(request, "order_offer")


@routes.post("/v1/federation/holds/{id}/commit")
async def commit_hold(request: web.Request) -> web.Response:
    """A peer commits a hold with the contracts it signed; answered with the two-signature contracts."""
    return await _peer_post(request, "hold_commit", HOLD_ID.value(request))


@routes.post("/v1/federation/holds/{id}/release")
async def release_hold(request: web.Request) -> web.Response:
    """A peer releases a hold."""
    return await _peer_post(request, "hold_release", HOLD_ID.value(request))


@routes.post("/v1/federation/mirror")
async def mirror(request: web.Request) -> web.Response:
    """A peer mirrors usage/settlement records of a cross-exchange contract it owns."""
    return await _peer_post(request, "mirror")


@routes.get("/v1/federation/identity")
async def identity(request: web.Request) -> web.Response:
    """This exchange's authority, origin, URL and key (what peers need to add it)."""
    return _json(services(request).federation.ctx.identity_view())


@routes.get("/v1/federation/peers")
async def peers(request: web.Request) -> web.Response:
    """Known peers with reachability, log consistency, last checkpoint and summary (operator only)."""
    who = require_principal(request)
    return _json({"peers": await services(request).federation.reads.peers_for(who)})


@routes.get("/v1/federation/keys")
async def keys(request: web.Request) -> web.Response:
    """This exchange's key and its peers' keys (trusted for two-party and mirrored records)."""
    return _json(await services(request).federation.peers.keys_view())


@routes.get("/v1/federation/summaries")
async def summaries(request: web.Request) -> web.Response:
    """Every capacity summary kept (own and peers'), with freshness."""
    return _json({"summaries": await services(request).federation.summaries.summaries_view()})


@routes.get("/v1/federation/summary")
async def own_summary(request: web.Request) -> web.Response:
    """This exchange's current signed capacity summary (DSSE envelope)."""
    return _json(await services(request).federation.summaries.own_summary())


@routes.get("/v1/federation/checkpoint")
async def checkpoint(request: web.Request) -> web.Response:
    """This exchange's latest signed log checkpoint (peers verify consistency against it)."""
    return _json(await services(request).federation.resync.own_checkpoint())


@routes.get("/v1/federation/consistency")
async def consistency(request: web.Request) -> web.Response:
    """Consistency proof between two sizes of this exchange's log."""
    from_param, to_param = CONSISTENCY_QUERY
    size1, size2 = from_param.value(request, 0), to_param.value(request, 0)
    return _json(await services(request).federation.resync.own_consistency(size1, size2))


@routes.get("/v1/federation/contracts")
async def contracts(request: web.Request) -> web.Response:
    """Cross-exchange contracts known here (operator: all; a peer exchange: those with it)."""
    who = require_principal(request)
    fed = services(request).federation
    peer, order_id = (p.parse(request) for p in CONTRACTS_QUERY)
    return _json({"contracts": await fed.reads.contracts_for(who, peer, order_id)})


@routes.get("/v1/federation/holds")
async def holds(request: web.Request) -> web.Response:
    """Holds this exchange granted to peers (operator: all; a peer exchange: its own)."""
    who = require_principal(request)
    status = HOLDS_QUERY[0].parse(request)
    return _json({"holds": await services(request).federation.reads.holds_for(who, status)})


@routes.get("/v1/federation/mirrored")
async def mirrored(request: web.Request) -> web.Response:
    """Usage and settlement records mirrored here from owning exchanges (operator: all; a peer: its own)."""
    who = require_principal(request)
    fed = services(request).federation
    return _json({"records": await fed.reads.mirrored_for(who, MIRRORED_QUERY[0].parse(request))})


@routes.get("/v1/federation/events")
async def events(request: web.Request) -> web.Response:
    """Refused peer summaries, log inconsistencies, expired holds (newest first; operator only)."""
    who = require_principal(request)
    limit_param, kind_param = EVENTS_QUERY
    limit, kind = limit_param.value(request, 100), kind_param.parse(request)
    return _json({"events": await services(request).federation.reads.events_for(who, limit, kind)})


@routes.get("/v1/federation/evidence")
async def evidence(request: web.Request) -> web.Response:
    """Why peers were flagged inconsistent: the two signed checkpoints of each flag (operator only)."""
    who = require_principal(request)
    peer = EVIDENCE_QUERY[0].parse(request)
    return _json({"evidence": await services(request).federation.recovery.evidence_for(who, peer)})


@routes.post("/v1/peers/{authority}/reverify")
async def reverify_peer(request: web.Request) -> web.Response:
    """Re-verify a flagged peer's log from consistency proofs; restored if consistent (operator only)."""
    who = require_principal(request)
    authority = AUTHORITY.value(request)
    return _json(await services(request).federation.recovery.reverify_for(who, authority))


@routes.get("/v1/federation/stats")
async def stats(request: web.Request) -> web.Response:
    """Messages sent by type, orders forwarded and committed, forward latency percentiles."""
    return _json(services(request).federation.stats())


async def federation_tasks(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the federation loops (summaries, resync, forwarding, hold sweeper) while serving."""
    svc = app[SERVICES]
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(loop) for loop in svc.federation.background_tasks()]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await svc.federation.close()
