"""Handlers for the transparency log: checkpoint note, entries, inclusion and consistency proofs, exchange keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from exchange.api.keys import SERVICES, services
from exchange.api.parsing import ascii_int, query_int
from identifiers.errors import ValidationError

routes = web.RouteTableDef()

MAX_INDEX = (1 << 62) - 1


def _required_int(request: web.Request, name: str) -> int:
    if request.query.get(name, "") == "":
        raise ValidationError(f"query parameter {name} is required", field=name)
    return query_int(request, name, 0, lo=0, hi=MAX_INDEX)


def _optional_int(request: web.Request, name: str) -> int | None:
    if request.query.get(name, "") == "":
        return None
    return query_int(request, name, 0, lo=0, hi=MAX_INDEX)


@routes.get("/v1/ledger/checkpoint")
async def checkpoint(request: web.Request) -> web.Response:
    """The latest signed checkpoint as a C2SP note (signing a fresh one first if the log grew)."""
    cp = await services(request).ledger.checkpoint()
    return web.Response(
        text=cp.note,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Hetex-Tree-Size": str(cp.size), "X-Hetex-Key-Id": cp.key_id},
    )


@routes.get("/v1/ledger/entries/{index}")
async def entry(request: web.Request) -> web.Response:
    """One stored entry: the stored bytes (base64), its leaf hash and the parsed envelope."""
    index = ascii_int(request.match_info["index"], "index", hi=MAX_INDEX)
    stored = await services(request).ledger.entry(index)
    return web.json_response(stored.to_json())


@routes.get("/v1/ledger/proofs/inclusion")
async def inclusion(request: web.Request) -> web.Response:
    """Inclusion proof of `index` in the tree of `size` (default: the latest checkpoint)."""
    index = _required_int(request, "index")
    size = _optional_int(request, "size")
    proof = await services(request).ledger.inclusion_proof(index, size)
    return web.json_response(proof.to_json())


@routes.get("/v1/ledger/proofs/consistency")
async def consistency(request: web.Request) -> web.Response:
    """Consistency proof between tree sizes `from` and `to` (default: the latest checkpoint)."""
    size1 = _required_int(request, "from")
    size2 = _optional_int(request, "to")
    proof = await services(request).ledger.consistency_proof(size1, size2)
    return web.json_response(proof.to_json())


@routes.get("/v1/ledger/keys")
async def keys(request: web.Request) -> web.Response:
    """Every exchange key with its validity, so old checkpoints and records stay verifiable."""
    svc = services(request)
    infos = await svc.identity.keys()
    return web.json_response(
        {"origin": svc.settings.origin, "current": svc.identity.key_id, "keys": [k.to_json() for k in infos]}
    )


async def checkpoint_publisher(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: register the exchange key; publish a checkpoint every N seconds when the log grew (0: off)."""
    svc = app[SERVICES]
    await svc.identity.register()
    interval = svc.settings.checkpoint_interval_seconds
    stop = asyncio.Event()
    task = asyncio.create_task(svc.ledger.run_publisher(interval, stop)) if interval > 0 else None
    yield
    if task is not None:
        stop.set()
        await task
