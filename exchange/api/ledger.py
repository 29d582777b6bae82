"""Handlers for the transparency log: checkpoint note, entries, inclusion and consistency proofs, exchange keys."""

from __future__ import annotations

from aiohttp import web

from exchange.api.keys import SERVICES, services
from exchange.api.operations import Api, Args
from exchange.api.params import IntParam
from exchange.services.disclosure import read_entry
from federation.errors import SignatureError

routes = Api("ledger")

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


PROOF = {"type": "object"}
INDEX_PARAM, SIZE_PARAM = INCLUSION_QUERY
FROM_PARAM, TO_PARAM = CONSISTENCY_QUERY
#: the log's errors: an entry or size not there (404), a log being rebuilt (409), a bad index or size (422)
LEDGER_ERRORS = (404, 409, 422)


@routes.get(
    "/v1/ledger/checkpoint",
    "ledgerCheckpoint",
    "The latest signed checkpoint of the transparency log (C2SP signed note)",
    response={"type": "string"},
    content_type="text/plain",
    errors=(*LEDGER_ERRORS, 503),
)
async def checkpoint(request: web.Request, args: Args) -> web.Response:
    """The latest signed checkpoint as a C2SP note (signing a fresh one first if the log grew)."""
    cp = await services(request).ledger.checkpoint()
    return web.Response(
        text=cp.note,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Hetex-Tree-Size": str(cp.size), "X-Hetex-Key-Id": cp.key_id},
    )


@routes.get(
    "/v1/ledger/entries/{index}",
    "ledgerEntry",
    "One log entry: stored bytes (base64), leaf hash and the parsed DSSE envelope; a signed GET by a party to"
    " the record, the regulator or the operator (leaf hashes and proofs are public: proofs/inclusion)",
    params=(INDEX,),
    response={"type": "object", "required": ["index"]},
    signed=True,
    principal=False,  # the index is checked first; an unsigned read is 401 with where the public proofs are
    errors=LEDGER_ERRORS,
)
async def entry(request: web.Request, args: Args) -> web.Response:
    """One stored entry: the stored bytes (base64), its leaf hash and the parsed envelope; a signed GET by a
    party to the record, the regulator or the operator (the leaf hash and proofs are public: proofs/inclusion)."""
    if args.caller is None:
        raise SignatureError(
            "signature_missing",
            "log records hold commercial terms: sign the GET as a party, the regulator or the operator"
            " (leaf hashes and proofs are public at /v1/ledger/proofs/inclusion)",
        )
    stored = await read_entry(services(request).ledger, args.caller, args[INDEX])
    return web.json_response(stored.to_json())


@routes.get(
    "/v1/ledger/proofs/inclusion",
    "ledgerInclusionProof",
    "Inclusion proof of an entry in the tree of a given size (default: latest checkpoint)",
    params=INCLUSION_QUERY,
    response=PROOF,
    errors=LEDGER_ERRORS,
)
async def inclusion(request: web.Request, args: Args) -> web.Response:
    """Inclusion proof of `index` in the tree of `size` (default: the latest checkpoint)."""
    proof = await services(request).ledger.inclusion_proof(args[INDEX_PARAM], args.get(SIZE_PARAM))
    return web.json_response(proof.to_json())


@routes.get(
    "/v1/ledger/proofs/consistency",
    "ledgerConsistencyProof",
    "Consistency proof between two tree sizes",
    params=CONSISTENCY_QUERY,
    response=PROOF,
    errors=LEDGER_ERRORS,
)
async def consistency(request: web.Request, args: Args) -> web.Response:
    """Consistency proof between tree sizes `from` and `to` (default: the latest checkpoint)."""
    proof = await services(request).ledger.consistency_proof(args[FROM_PARAM], args.get(TO_PARAM))
    return web.json_response(proof.to_json())


@routes.get(
    "/v1/ledger/keys",
    "ledgerKeys",
    "Every exchange key with its validity",
    response={
        "type": "object",
        "required": ["origin", "current", "keys"],
        "properties": {"origin": {"type": "string"}, "keys": {"type": "array", "items": {"type": "object"}}},
    },
)
async def keys(request: web.Request, args: Args) -> web.Response:
    """Every exchange key with its validity, so old checkpoints and records stay verifiable."""
    svc = services(request)
    infos = await svc.identity.keys()
    current = next((k.key_id for k in infos if k.status == "current"), None)
    return web.json_response({"origin": svc.settings.origin, "current": current, "keys": [k.to_json() for k in infos]})


async def load_exchange_key(app: web.Application) -> None:
    """on_startup: load the exchange key (or refuse to start); the duties lease publishes checkpoints."""
    await app[SERVICES].identity.load()
