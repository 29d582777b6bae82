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
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypedDict

from aiohttp import web

from exchange.api.auth import target_uri
from exchange.api.keys import SERVICES, services
from exchange.api.metrics import METRICS
from exchange.api.operations import Api, Args
from exchange.api.params import ChoiceParam, IntParam, TextParam, uuid_param
from exchange.composition import Services
from exchange.services.lease import Fence
from exchange.storage.federation import HOLD_STATUSES
from identifiers.errors import AuthenticationError

routes = Api("federation")

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
CONTRACTS_QUERY = (PEER, uuid_param("order_id", "query", "one order"))
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


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "object", "required": [name], "properties": {name: {"type": "array", "items": {"type": "object"}}}}


OBJECT = {"type": "object"}


class PeerMessage(TypedDict):
    """A peer message: signed by the peer exchange's key and verified by the federation service."""

    response: Mapping[str, Any]
    signed: bool
    principal: bool
    errors: tuple[int, ...]


class SignedRead(TypedDict):
    """A read signed by the operator or a peer exchange (which sees what concerns it)."""

    signed: bool
    errors: tuple[int, ...]


PEER_POST = PeerMessage(response=OBJECT, signed=True, principal=False, errors=(404, 409, 413, 422))
SIGNED_READ = SignedRead(signed=True, errors=(403,))


@routes.post("/v1/federation/summaries", "peerPushSummary", "A peer pushes its signed capacity summary", **PEER_POST)
async def post_summary(request: web.Request, args: Args) -> web.Response:
    """A peer pushes its signed capacity summary."""
    return await _peer_post(request, "capacity_summary")


@routes.post(
    "/v1/federation/orders",
    "peerOfferOrder",
    "A peer offers an order: answered with a hold or a refusal",
    **PEER_POST,
)
async def post_order(request: web.Request, args: Args) -> web.Response:
    """A peer offers an order; answered with a hold (or a refusal). Idempotent by (origin, message id)."""
    return await _peer_post(request, "order_offer")


@routes.post(
    "/v1/federation/holds/{id}/commit",
    "peerCommitHold",
    "A peer commits a hold with contracts it signed",
    params=(HOLD_ID,),
    **PEER_POST,
)
async def commit_hold(request: web.Request, args: Args) -> web.Response:
    """A peer commits a hold with the contracts it signed; answered with the two-signature contracts."""
    return await _peer_post(request, "hold_commit", args[HOLD_ID])


@routes.post(
    "/v1/federation/holds/{id}/release", "peerReleaseHold", "A peer releases a hold", params=(HOLD_ID,), **PEER_POST
)
async def release_hold(request: web.Request, args: Args) -> web.Response:
    """A peer releases a hold."""
    return await _peer_post(request, "hold_release", args[HOLD_ID])


@routes.post(
    "/v1/federation/mirror",
    "peerMirror",
    "A peer mirrors usage and settlement of its contracts with us",
    **PEER_POST,
)
async def mirror(request: web.Request, args: Args) -> web.Response:
    """A peer mirrors usage/settlement records of a cross-exchange contract it owns."""
    return await _peer_post(request, "mirror")


@routes.get(
    "/v1/federation/identity",
    "federationIdentity",
    "Authority, origin, URL and key",
    response={"type": "object", "required": ["authority", "origin", "url", "key_id", "public_key", "verifier_key"]},
)
async def identity(request: web.Request, args: Args) -> web.Response:
    """This exchange's authority, origin, URL and key (what peers need to add it)."""
    return _json(services(request).federation.ctx.identity_view())


@routes.get(
    "/v1/federation/peers",
    "federationPeers",
    "Peers with reachability and log status (operator only)",
    response=_list_of("peers"),
    **SIGNED_READ,
)
async def peers(request: web.Request, args: Args) -> web.Response:
    """Known peers with reachability, log consistency, last checkpoint and summary (operator only)."""
    return _json({"peers": await services(request).federation.reads.peers_for(args.who)})


@routes.get(
    "/v1/federation/keys",
    "federationKeys",
    "This exchange's key and its peers' keys",
    response={"type": "object", "required": ["self", "peers"]},
)
async def keys(request: web.Request, args: Args) -> web.Response:
    """This exchange's key and its peers' keys (trusted for two-party and mirrored records)."""
    return _json(await services(request).federation.peers.keys_view())


@routes.get(
    "/v1/federation/summaries",
    "federationSummaries",
    "Capacity summaries kept (own and peers')",
    response=_list_of("summaries"),
)
async def summaries(request: web.Request, args: Args) -> web.Response:
    """Every capacity summary kept (own and peers'), with freshness."""
    return _json({"summaries": await services(request).federation.summaries.summaries_view()})


@routes.get(
    "/v1/federation/summary",
    "federationOwnSummary",
    "This exchange's signed capacity summary (DSSE)",
    response={"type": "object", "required": ["payload", "payloadType", "signatures"]},
)
async def own_summary(request: web.Request, args: Args) -> web.Response:
    """This exchange's current signed capacity summary (DSSE envelope)."""
    return _json(await services(request).federation.summaries.own_summary())


@routes.get(
    "/v1/federation/checkpoint",
    "federationCheckpoint",
    "Latest signed log checkpoint",
    response={"type": "object", "required": ["origin", "size", "root", "note"]},
)
async def checkpoint(request: web.Request, args: Args) -> web.Response:
    """This exchange's latest signed log checkpoint (peers verify consistency against it)."""
    return _json(await services(request).federation.resync.own_checkpoint())


@routes.get(
    "/v1/federation/consistency",
    "federationConsistency",
    "Consistency proof between two log sizes",
    params=CONSISTENCY_QUERY,
    response=OBJECT,
    errors=(422,),
)
async def consistency(request: web.Request, args: Args) -> web.Response:
    """Consistency proof between two sizes of this exchange's log."""
    from_param, to_param = CONSISTENCY_QUERY
    return _json(await services(request).federation.resync.own_consistency(args[from_param], args[to_param]))


@routes.get(
    "/v1/federation/contracts",
    "federationContracts",
    "Two-exchange contracts known here (operator: all; a peer exchange: those with it)",
    params=CONTRACTS_QUERY,
    response=_list_of("contracts"),
    **SIGNED_READ,
)
async def contracts(request: web.Request, args: Args) -> web.Response:
    """Cross-exchange contracts known here (operator: all; a peer exchange: those with it)."""
    peer, order_id = (args.get(p) for p in CONTRACTS_QUERY)
    return _json({"contracts": await services(request).federation.reads.contracts_for(args.who, peer, order_id)})


@routes.get(
    "/v1/federation/holds",
    "federationHolds",
    "Holds granted to peers (operator: all; a peer exchange: its own)",
    params=HOLDS_QUERY,
    response=_list_of("holds"),
    **SIGNED_READ,
)
async def holds(request: web.Request, args: Args) -> web.Response:
    """Holds this exchange granted to peers (operator: all; a peer exchange: its own)."""
    return _json({"holds": await services(request).federation.reads.holds_for(args.who, args.get(HOLDS_QUERY[0]))})


@routes.get(
    "/v1/federation/mirrored",
    "federationMirrored",
    "Records mirrored here by owning exchanges (operator: all; a peer exchange: its own)",
    params=MIRRORED_QUERY,
    response=_list_of("records"),
    **SIGNED_READ,
)
async def mirrored(request: web.Request, args: Args) -> web.Response:
    """Usage and settlement records mirrored here from owning exchanges (operator: all; a peer: its own)."""
    fed = services(request).federation
    return _json({"records": await fed.reads.mirrored_for(args.who, args.get(MIRRORED_QUERY[0]))})


@routes.get(
    "/v1/federation/events",
    "federationEvents",
    "Refused messages, log inconsistencies, expiries (operator only)",
    params=EVENTS_QUERY,
    response=_list_of("events"),
    signed=True,
    errors=(403, 422),
)
async def events(request: web.Request, args: Args) -> web.Response:
    """Refused peer summaries, log inconsistencies, expired holds (newest first; operator only)."""
    limit_param, kind_param = EVENTS_QUERY
    found = await services(request).federation.reads.events_for(
        args.who, args.get(limit_param, 100), args.get(kind_param)
    )
    return _json({"events": found})


@routes.get(
    "/v1/federation/stats",
    "federationStats",
    "Messages sent, orders forwarded, latency",
    response={"type": "object", "required": ["messages_sent", "forward_latency_ms"]},
)
async def stats(request: web.Request, args: Args) -> web.Response:
    """Messages sent by type, orders forwarded and committed, forward latency percentiles."""
    return _json(services(request).federation.stats())


def register_federation_duty(svc: Services) -> None:
    """The federation and hub loops (summaries, resync, forwarding, holds, hub rounds): a duty of the lease holder."""

    async def duty(_fence: Fence | None, stop: asyncio.Event) -> None:
        loops = [*svc.federation.background_tasks(), *svc.hub.background_tasks()]
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    svc.lease.add_duty("federation", duty)


async def federation_tasks(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: after the duties lease stopped its loops, close the federation clients."""
    svc = app[SERVICES]
    yield
    await svc.lease.shutdown()
    await svc.hub.close()
    await svc.federation.close()
