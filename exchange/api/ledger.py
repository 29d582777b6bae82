"""Handlers for the transparency log: checkpoint note, entries, inclusion and consistency proofs, exchange keys."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import PRINCIPAL
from exchange.api.keys import SERVICES, services
from exchange.api.params import IntParam
from exchange.services.disclosure import read_entry
from federation.errors import SignatureError

routes = web.RouteTableDef()

MAX_INDEX = (1 << 62) - 1

INDEX = IntParam("index", "path", "log entry index (0-based integer)", lo=0, hi=MAX_INDEX)
INCLUSION_QUERY = (
    IntParam("index", "query", "entry index", required=True, lo=0, hi=MAX_INDEX),
    IntParam("size", "query", "tree size (default: latest checkpoint)", lo=0, hi=MAX_INDEX),
)
CONSISTENCY_QUERY = (
    IntParam(
        "from",
        "query",
        "older tree size (>= 1: nothing is proved consistent with the empty tree)",
        required=True,
        lo=1,
        hi=MAX_INDEX,
    ),
    IntParam("to", "query", "newer tree size (default: latest checkpoint)", lo=0, hi=MAX_INDEX),
)


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
    """One stored entry: the stored bytes (base64), its leaf hash and the parsed envelope; a signed GET by a
    party to the record, the regulator or the operator (the leaf hash and proofs are public: proofs/inclusion)."""
    index = INDEX.value(request, 0)
    who = request.get(PRINCIPAL)
    if who is None:
        raise SignatureError(
            "signature_missing",
            "log records hold commercial terms: sign the GET as a party, the regulator or the operator"
            " (leaf hashes and proofs are public at /v1/ledger/proofs/inclusion)",
        )
    stored = await read_entry(services(request).ledger, who, index)
    return web.json_response(stored.to_json())


@routes.get("/v1/ledger/proofs/inclusion")
async def inclusion(request: web.Request) -> web.Response:
    """Inclusion proof of `index` in the tree of `size` (default: the latest checkpoint)."""
    index_param, size_param = INCLUSION_QUERY
    index, size = index_param.value(request, 0), size_param.parse(request)
    proof = await services(request).ledger.inclusion_proof(index, size)
    return web.json_response(proof.to_json())


@routes.get("/v1/ledger/proofs/consistency")
async def consistency(request: web.Request) -> web.Response:
    """Consistency proof between tree sizes `from` and `to` (default: the latest checkpoint)."""
    from_param, to_param = CONSISTENCY_QUERY
    size1, size2 = from_param.value(request, 0), to_param.parse(request)
    proof = await services(request).ledger.consistency_proof(size1, size2)
    return web.json_response(proof.to_json())


@routes.get("/v1/ledger/keys")
async def keys(request: web.Request) -> web.Response:
    """Every exchange key with its validity, so old checkpoints and records stay verifiable."""
    svc = services(request)
    infos = await svc.identity.keys()
    current = next((k.key_id for k in infos if k.status == "current"), None)
    return web.json_response({"origin": svc.settings.origin, "current": current, "keys": [k.to_json() for k in infos]})


async def load_exchange_key(app: web.Application) -> None:
    """on_startup: load the exchange key (or refuse to start); the duties lease publishes checkpoints."""
    await app[SERVICES].identity.load()
