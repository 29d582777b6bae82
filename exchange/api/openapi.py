"""OpenAPI 3.1 description of the HTTP API, generated from the pydantic request/response models.

`python -m exchange.api.openapi > specs/openapi.yaml` writes the committed file (a test checks it is
current); the app serves the same document at GET /openapi.json.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from exchange.api import contracts, federation, ledger, orders, registration, rounds, settlements
from exchange.api.params import CRI, CRI_PATTERN, ID, Param
from exchange.services.audit import ExportRequest
from exchange.services.contract_views import (
    BatchView,
    CancelBody,
    ContractList,
    ContractView,
    SettlementList,
    SettlementRun,
    SettlementView,
    UsageEnvelope,
    UsageList,
    UsageView,
)
from exchange.services.orders import OrderPage, OrderSpec, OrderView
from exchange.services.participants import ParticipantRegistration, ParticipantView
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
from identifiers.catalogue import load_catalogue
from identifiers.regions import load_regions

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
REF = "#/components/schemas/{model}"


class Problem(BaseModel):
    """RFC 9457 problem details, with hetex's stable `code` and, where known, `field` and `reason`."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str
    detail: str
    field: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Op:
    """One operation: method, path, models, statuses and whether a signature is required."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    ok: int = 200
    response: type[BaseModel] | dict[str, Any] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    signed: bool = False
    errors: tuple[int, ...] = ()
    query: tuple[Param, ...] = ()
    headers: tuple[dict[str, Any], ...] = ()
    content_type: str = "application/json"
    extra: dict[str, Any] = field(default_factory=dict)


#: path parameters by placeholder: the declarations the handlers parse with
PATH_PARAMS: dict[str, Param] = {
    "{cri}": CRI,
    "{id}": ID,
    "{index}": ledger.INDEX,
    "{authority}": federation.AUTHORITY,
}
IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "retry key: same key + same body returns the first order (200); a different body is 409",
}

HEALTH = {
    "type": "object",
    "required": ["status", "authority"],
    "properties": {"status": {"type": "string"}, "authority": {"type": "string"}},
}
CATALOGUE = {
    "type": "object",
    "required": ["count", "vendors", "models"],
    "properties": {
        "count": {"type": "integer"},
        "vendors": {"type": "array", "items": {"type": "string"}},
        "models": {"type": "array", "items": {"type": "object", "required": ["code", "vendor", "family"]}},
    },
}
REGIONS = {
    "type": "object",
    "required": ["regions", "latency_ms"],
    "properties": {
        "regions": {"type": "array", "items": {"type": "object", "required": ["code", "name"]}},
        "latency_ms": {"type": "object", "additionalProperties": {"type": "object"}},
    },
}
RESOLVED = {"oneOf": [{"$ref": REF.format(model="SiteView")}, {"$ref": REF.format(model="PoolView")}]}
TEXT = {"type": "string"}
OBJECT = {"type": "object"}
LEDGER_ENTRY = {"type": "object", "required": ["index"]}
ROUND_VIEW = {
    "type": "object",
    "required": ["id", "status", "disclosure", "prices"],
    "properties": {"disclosure": {"type": "string", "enum": ["public", "full"]}, "prices": {"type": "array"}},
}
PROOF = {"type": "object"}
LEDGER_KEYS = {
    "type": "object",
    "required": ["origin", "current", "keys"],
    "properties": {"origin": {"type": "string"}, "keys": {"type": "array", "items": {"type": "object"}}},
}
EXPORT_STATUS = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {"id": {"type": "string"}, "status": {"type": "string"}},
}
BUNDLE = {"type": "string", "format": "binary"}
LEDGER_ERRORS = (404, 409, 422)

FED_OBJECT = {"type": "object"}
FED_IDENTITY = {"type": "object", "required": ["authority", "origin", "url", "key_id", "public_key", "verifier_key"]}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "object", "required": [name], "properties": {name: {"type": "array", "items": {"type": "object"}}}}


OPS: tuple[Op, ...] = (
    Op("get", "/healthz", "healthz", "Liveness and a database round trip", "reference", response=HEALTH),
    Op("get", "/metrics", "metrics", "Prometheus metrics", "reference", response=TEXT, content_type="text/plain"),
    Op("get", "/openapi.json", "openapi", "This document", "reference", response={"type": "object"}),
    Op("get", "/v1/catalogue/accelerators", "catalogue", "The accelerator catalogue", "reference", response=CATALOGUE),
    Op("get", "/v1/regions", "regions", "Regions and the latency matrix", "reference", response=REGIONS),
    Op(
        "get",
        "/v1/resolve/{cri}",
        "resolve",
        "The site or pool a CRI names (or its tombstone); a peer's CRI answers 307 to the owning exchange",
        "reference",
        response=RESOLVED,
        errors=(404, 422),
    ),
    Op(
        "get",
        "/v1/ledger/checkpoint",
        "ledgerCheckpoint",
        "The latest signed checkpoint of the transparency log (C2SP signed note)",
        "ledger",
        response=TEXT,
        content_type="text/plain",
        errors=LEDGER_ERRORS,
    ),
    Op(
        "get",
        "/v1/ledger/entries/{index}",
        "ledgerEntry",
        "One log entry: stored bytes (base64), leaf hash and the parsed DSSE envelope; a signed GET by a party to"
        " the record, the regulator or the operator (leaf hashes and proofs are public: proofs/inclusion)",
        "ledger",
        response=LEDGER_ENTRY,
        signed=True,
        errors=LEDGER_ERRORS,
    ),
    Op(
        "get",
        "/v1/ledger/proofs/inclusion",
        "ledgerInclusionProof",
        "Inclusion proof of an entry in the tree of a given size (default: latest checkpoint)",
        "ledger",
        response=PROOF,
        errors=LEDGER_ERRORS,
        query=ledger.INCLUSION_QUERY,
    ),
    Op(
        "get",
        "/v1/ledger/proofs/consistency",
        "ledgerConsistencyProof",
        "Consistency proof between two tree sizes",
        "ledger",
        response=PROOF,
        errors=LEDGER_ERRORS,
        query=ledger.CONSISTENCY_QUERY,
    ),
    Op("get", "/v1/ledger/keys", "ledgerKeys", "Every exchange key with its validity", "ledger", response=LEDGER_KEYS),
    Op(
        "post",
        "/v1/audit/exports",
        "createAuditExport",
        "Start an audit export for a period (regulators only); 202 with the job status and Location",
        "audit",
        ok=202,
        response=EXPORT_STATUS,
        body=ExportRequest,
        signed=True,
        errors=(403, 409, 413, 422),
    ),
    Op(
        "post",
        "/v1/rounds",
        "runRound",
        "Run one clearing round now (operator only): statistics, audit and the contracts made",
        "rounds",
        ok=201,
        response=OBJECT,
        signed=True,
        errors=(403, 409),
    ),
    Op(
        "get",
        "/v1/rounds",
        "listRounds",
        "Recent clearing rounds, newest first",
        "rounds",
        response=OBJECT,
        errors=(422,),
        query=(rounds.LIMIT,),
    ),
    Op(
        "get",
        "/v1/rounds/{id}",
        "getRound",
        "One round: welfare, LP bound, gap, matched devices, build/solve seconds, method, audit checks; class"
        " prices where enough orders contracted; per-order detail for the signed caller's own orders (in full for"
        " the regulator and the operator)",
        "rounds",
        response=ROUND_VIEW,
        errors=(404, 422),
    ),
    Op(
        "get",
        "/v1/market",
        "getMarket",
        "Depth (open demand, free offered devices) and last clearing prices by region x model family",
        "rounds",
        response=OBJECT,
    ),
    Op(
        "get",
        "/v1/orders/{id}/fills",
        "getOrderFills",
        "The contracts filling one of the caller's orders",
        "rounds",
        response=OBJECT,
        signed=True,
        errors=(403, 404, 422),
    ),
    Op(
        "get",
        "/v1/offers/{id}/fills",
        "getOfferFills",
        "The contracts made on one of the caller's offers, and its devices free now",
        "rounds",
        response=OBJECT,
        signed=True,
        errors=(403, 404, 422),
    ),
    Op(
        "get",
        "/v1/audit/exports/{id}",
        "getAuditExport",
        "Status and progress of one of the caller's exports",
        "audit",
        response=EXPORT_STATUS,
        signed=True,
        errors=(403, 404, 422),
    ),
    Op(
        "get",
        "/v1/audit/exports/{id}/bundle",
        "getAuditBundle",
        "The finished bundle (tar.gz)",
        "audit",
        response=BUNDLE,
        content_type="application/gzip",
        signed=True,
        errors=(403, 404, 409, 422),
    ),
    Op(
        "post",
        "/v1/participants",
        "registerParticipant",
        "Register a provider or buyer; signed by the key being registered (proof of possession)",
        "participants",
        ok=201,
        response=ParticipantView,
        body=ParticipantRegistration,
        signed=True,
        errors=(409, 413, 422),
    ),
    Op(
        "get",
        "/v1/participants/me",
        "me",
        "The participant who signed the request",
        "participants",
        response=ParticipantView,
        signed=True,
    ),
    Op(
        "post",
        "/v1/sites",
        "addSite",
        "Register a data-centre node; answers with its site CRI",
        "registration",
        ok=201,
        response=SiteView,
        body=SiteRegistration,
        signed=True,
        errors=(403, 413, 422),
    ),
    Op(
        "get",
        "/v1/sites",
        "listSites",
        "The caller's sites with their pools (provider)",
        "registration",
        response=SiteList,
        signed=True,
        errors=(403, 422),
        query=(registration.SITE_STATUS,),
    ),
    Op(
        "get",
        "/v1/sites/{cri}",
        "getSite",
        "A site with its pools",
        "registration",
        response=SiteDetail,
        errors=(404, 422),
    ),
    Op(
        "delete",
        "/v1/sites/{cri}",
        "deregisterSite",
        "Deregister a site: it and its pools become tombstones, open offers are withdrawn",
        "registration",
        response=SiteView,
        signed=True,
        errors=(403, 404, 409, 422),
    ),
    Op(
        "post",
        "/v1/sites/{cri}/heartbeat",
        "heartbeat",
        "The site is alive: its offers stay matchable for the heartbeat timeout",
        "registration",
        response=HeartbeatView,
        signed=True,
        errors=(403, 404, 409, 422),
    ),
    Op(
        "post",
        "/v1/sites/{cri}/pools",
        "addPool",
        "Declare a pool of identical accelerators; answers with its pool CRI",
        "registration",
        ok=201,
        response=PoolView,
        body=PoolDeclaration,
        signed=True,
        errors=(403, 404, 409, 413, 422),
    ),
    Op(
        "get",
        "/v1/pools/{cri}",
        "getPool",
        "A pool (or its tombstone)",
        "registration",
        response=PoolView,
        errors=(404, 422),
    ),
    Op(
        "delete",
        "/v1/pools/{cri}",
        "tombstonePool",
        "Tombstone a pool; its open offers are withdrawn",
        "registration",
        response=PoolView,
        signed=True,
        errors=(403, 404, 409, 422),
    ),
    Op(
        "post",
        "/v1/offers",
        "postOffer",
        "Offer devices of a pool",
        "registration",
        ok=201,
        response=OfferView,
        body=OfferPost,
        signed=True,
        errors=(403, 404, 409, 413, 422),
    ),
    Op(
        "get",
        "/v1/offers",
        "listOffers",
        "The caller's offers",
        "registration",
        response=OfferList,
        signed=True,
        errors=(403, 422),
        query=(registration.OFFER_STATUS,),
    ),
    Op(
        "get",
        "/v1/offers/{id}",
        "getOffer",
        "One of the caller's offers",
        "registration",
        response=OfferView,
        signed=True,
        errors=(403, 404, 422),
    ),
    Op(
        "patch",
        "/v1/offers/{id}",
        "amendOffer",
        "Amend an open offer (version + 1)",
        "registration",
        response=OfferView,
        body=OfferAmendment,
        signed=True,
        errors=(403, 404, 409, 413, 422),
    ),
    Op(
        "delete",
        "/v1/offers/{id}",
        "withdrawOffer",
        "Withdraw an open offer",
        "registration",
        response=OfferView,
        signed=True,
        errors=(403, 404, 409, 422),
    ),
    Op(
        "post",
        "/v1/orders",
        "submitOrder",
        "Submit an order (201); a retry with the same Idempotency-Key and body returns the original (200)",
        "orders",
        ok=201,
        response=OrderView,
        body=OrderSpec,
        signed=True,
        errors=(403, 409, 413, 422),
        headers=(IDEMPOTENCY,),
        extra={"200": "the order first submitted under this Idempotency-Key"},
    ),
    Op(
        "get",
        "/v1/orders",
        "listOrders",
        "The caller's orders, newest first, filtered, with an opaque cursor",
        "orders",
        response=OrderPage,
        signed=True,
        errors=(403, 422),
        query=orders.LIST_QUERY,
    ),
    Op(
        "get",
        "/v1/orders/{id}",
        "getOrder",
        "One of the caller's orders",
        "orders",
        response=OrderView,
        signed=True,
        errors=(403, 404, 422),
    ),
    Op(
        "post",
        "/v1/orders/{id}/cancel",
        "cancelOrder",
        "Cancel an open order",
        "orders",
        response=OrderView,
        signed=True,
        errors=(403, 404, 409, 422),
    ),
    Op(
        "get",
        "/v1/contracts",
        "listContracts",
        "The caller's contracts (as buyer or provider), newest first",
        "contracts",
        response=ContractList,
        signed=True,
        errors=(403, 422),
        query=contracts.LIST_QUERY,
    ),
    Op(
        "get",
        "/v1/contracts/{id}",
        "getContract",
        "One contract, for its buyer or provider (or the operator and regulators)",
        "contracts",
        response=ContractView,
        signed=True,
        errors=(403, 404, 422),
    ),
    Op(
        "post",
        "/v1/contracts/{id}/confirm",
        "confirmContract",
        "The provider confirms the contract's start",
        "contracts",
        response=ContractView,
        signed=True,
        errors=(403, 404, 409, 422),
    ),
    Op(
        "post",
        "/v1/contracts/{id}/cancel",
        "cancelContract",
        "Buyer or provider cancels: free before start, the used part is settled after (specs/billing.md 4)",
        "contracts",
        response=ContractView,
        body=CancelBody,
        signed=True,
        errors=(403, 404, 409, 413, 422),
    ),
    Op(
        "post",
        "/v1/contracts/{id}/usage",
        "reportUsage",
        "A node-signed usage report (DSSE envelope, specs/billing.md 5); 201 new, 200 an identical retry",
        "contracts",
        ok=201,
        response=UsageView,
        body=UsageEnvelope,
        signed=True,
        errors=(403, 404, 409, 413, 422),
        extra={"200": "the report first accepted under this meter and sequence number"},
    ),
    Op(
        "get",
        "/v1/contracts/{id}/usage",
        "listUsage",
        "Every usage report of a contract, with its flags",
        "contracts",
        response=UsageList,
        signed=True,
        errors=(403, 404, 422),
    ),
    Op(
        "post",
        "/v1/settlements/run",
        "runSettlement",
        "Operator: settle every due contract period as one batch transaction (201; 200 when nothing was due)",
        "settlement",
        ok=201,
        response=BatchView,
        body=SettlementRun,
        body_required=False,
        signed=True,
        errors=(403, 413, 422),
        extra={"200": "nothing was due: no batch"},
    ),
    Op(
        "get",
        "/v1/settlements",
        "listSettlements",
        "Settlement records of a contract (its parties), or the caller's (all for operator and regulators)",
        "settlement",
        response=SettlementList,
        signed=True,
        errors=(403, 404, 422),
        query=settlements.LIST_QUERY,
    ),
    Op(
        "get",
        "/v1/settlements/{id}",
        "getSettlement",
        "One settlement record with its signed envelope and log index",
        "settlement",
        response=SettlementView,
        signed=True,
        errors=(403, 404, 422),
    ),
    # federation (specs/federation.md): peer messages are signed by a peer exchange key; contracts, holds,
    # mirrored records, events and peers are signed reads (operator, or a peer exchange for its own records)
    *(
        Op("post", path, op_id, summary, "federation", response=FED_OBJECT, signed=True, errors=(404, 409, 413, 422))
        for path, op_id, summary in (
            ("/v1/federation/summaries", "peerPushSummary", "A peer pushes its signed capacity summary"),
            ("/v1/federation/orders", "peerOfferOrder", "A peer offers an order: answered with a hold or a refusal"),
            ("/v1/federation/holds/{id}/commit", "peerCommitHold", "A peer commits a hold with contracts it signed"),
            ("/v1/federation/holds/{id}/release", "peerReleaseHold", "A peer releases a hold"),
            ("/v1/federation/mirror", "peerMirror", "A peer mirrors usage and settlement of its contracts with us"),
        )
    ),
    Op(
        "get",
        "/v1/federation/identity",
        "federationIdentity",
        "Authority, origin, URL and key",
        "federation",
        response=FED_IDENTITY,
    ),
    Op(
        "get",
        "/v1/federation/peers",
        "federationPeers",
        "Peers with reachability and log status (operator only)",
        "federation",
        response=_list_of("peers"),
        signed=True,
        errors=(403,),
    ),
    Op(
        "get",
        "/v1/federation/keys",
        "federationKeys",
        "This exchange's key and its peers' keys",
        "federation",
        response={"type": "object", "required": ["self", "peers"]},
    ),
    Op(
        "get",
        "/v1/federation/summaries",
        "federationSummaries",
        "Capacity summaries kept (own and peers')",
        "federation",
        response=_list_of("summaries"),
    ),
    Op(
        "get",
        "/v1/federation/summary",
        "federationOwnSummary",
        "This exchange's signed capacity summary (DSSE)",
        "federation",
        response={"type": "object", "required": ["payload", "payloadType", "signatures"]},
    ),
    Op(
        "get",
        "/v1/federation/checkpoint",
        "federationCheckpoint",
        "Latest signed log checkpoint",
        "federation",
        response={"type": "object", "required": ["origin", "size", "root", "note"]},
    ),
    Op(
        "get",
        "/v1/federation/consistency",
        "federationConsistency",
        "Consistency proof between two log sizes",
        "federation",
        response=FED_OBJECT,
        errors=(422,),
        query=federation.CONSISTENCY_QUERY,
    ),
    Op(
        "get",
        "/v1/federation/contracts",
        "federationContracts",
        "Two-exchange contracts known here (operator: all; a peer exchange: those with it)",
        "federation",
        response=_list_of("contracts"),
        signed=True,
        errors=(403,),
        query=federation.CONTRACTS_QUERY,
    ),
    Op(
        "get",
        "/v1/federation/holds",
        "federationHolds",
        "Holds granted to peers (operator: all; a peer exchange: its own)",
        "federation",
        response=_list_of("holds"),
        signed=True,
        errors=(403,),
        query=federation.HOLDS_QUERY,
    ),
    Op(
        "get",
        "/v1/federation/mirrored",
        "federationMirrored",
        "Records mirrored here by owning exchanges (operator: all; a peer exchange: its own)",
        "federation",
        response=_list_of("records"),
        signed=True,
        errors=(403,),
        query=federation.MIRRORED_QUERY,
    ),
    Op(
        "get",
        "/v1/federation/events",
        "federationEvents",
        "Refused messages, log inconsistencies, expiries (operator only)",
        "federation",
        response=_list_of("events"),
        signed=True,
        errors=(403, 422),
        query=federation.EVENTS_QUERY,
    ),
    Op(
        "get",
        "/v1/federation/evidence",
        "federationEvidence",
        "Why peers were flagged inconsistent: the last verified and the conflicting signed checkpoint (operator only)",
        "federation",
        response=_list_of("evidence"),
        signed=True,
        errors=(403, 422),
        query=federation.EVIDENCE_QUERY,
    ),
    Op(
        "post",
        "/v1/peers/{authority}/reverify",
        "reverifyPeer",
        "Operator: re-verify a peer flagged inconsistent from consistency proofs; restored when its log is"
        " consistent, a real fork stays flagged with its evidence",
        "federation",
        response=FED_OBJECT,
        signed=True,
        errors=(403, 404, 422),
    ),
    Op(
        "get",
        "/v1/federation/stats",
        "federationStats",
        "Messages sent, orders forwarded, latency",
        "federation",
        response={"type": "object", "required": ["messages_sent", "forward_latency_ms"]},
    ),
)

SIGNATURE_PARAMS = {
    "SignatureInput": {
        "name": "Signature-Input",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": 'RFC 9421: sig1=("@method" "@target-uri" "content-digest");created=..;keyid="<8 hex>";'
        'alg="ed25519";nonce=".." (specs/signing.md)',
    },
    "Signature": {
        "name": "Signature",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "RFC 9421: sig1=:<base64 Ed25519 signature>:",
    },
    "ContentDigest": {
        "name": "Content-Digest",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "RFC 9530: sha-512=:<base64 SHA-512 of the body>: (an empty body too)",
    },
}

ERROR_TEXT = {
    400: "Bad request: a body that is not JSON, nested too deeply, or holds NUL/control characters or an integer"
    " beyond 2^53-1; a query parameter given empty (`?status=`, code empty_query_value) or twice; `field` names it",
    401: "Signature missing or refused; `reason` names why (signature_missing, signature_invalid, "
    "digest_mismatch, signature_expired, nonce_replayed, unknown_key, ...)",
    403: "Authenticated but not allowed; `reason` is role_forbidden or not_owner",
    404: "Not found",
    409: "Conflicts with the current state (tombstoned, already registered, idempotency key reused, ...)",
    413: "Body larger than 1 MiB",
    422: "Invalid input; `field` names the first bad field",
}


def _schemas() -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    inputs: set[type[BaseModel]] = {op.body for op in OPS if op.body is not None}
    outputs: set[type[BaseModel]] = {op.response for op in OPS if isinstance(op.response, type)}
    outputs |= {SiteView, PoolView, Problem}
    pairs: list[tuple[type[BaseModel], Any]] = [(m, "validation") for m in sorted(inputs, key=lambda m: m.__name__)]
    pairs += [(m, "serialization") for m in sorted(outputs, key=lambda m: m.__name__)]
    key_map, defs = models_json_schema(pairs, ref_template=REF)
    defs = defs.get("$defs", {})
    _constrain_inputs(defs)
    roots = [key_map[(m, "validation")]["$ref"].rsplit("/", 1)[-1] for m in inputs]
    _no_control_characters(defs, roots)
    return dict(key_map), defs


#: what the JSON boundary (exchange/api/boundary.py) refuses in a body string: C0 controls but TAB/LF/CR, DEL
NO_CONTROL_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"


def _no_control_characters(defs: dict[str, Any], roots: list[str]) -> None:
    """Every free-text string of a request body (no pattern or value set of its own) states the boundary's rule,
    so a schema-valid body never holds a character the server refuses."""
    seen: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref.rsplit("/", 1)[-1]
                if name not in seen and name in defs:
                    seen.add(name)
                    walk(defs[name])
            if node.get("type") == "string" and not ({"pattern", "enum", "const", "format"} & node.keys()):
                node["pattern"] = NO_CONTROL_PATTERN
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for root in roots:
        if root not in seen:
            seen.add(root)
            walk(defs[root])


#: decimal places of the Decimal inputs (registration.SiteRegistration), as a JSON number's step
DECIMAL_STEPS = {"pue": 0.001, "green_share": 0.0001}


#: OfferAmendment fields that may be left out but not given as null
AMEND_NOT_NULL = ("devices", "window_start", "min_lease_seconds", "ask_fen", "billing_modes")


def _constrain_inputs(defs: dict[str, Any]) -> None:
    """State in the schemas the value sets the server checks against its reference data (served regions,
    catalogue models, the CRI grammar), so a schema-valid value is one the server accepts."""
    regions = {"enum": list(load_regions().codes)}
    models = {"enum": list(load_catalogue().codes)}
    for model, prop, extra in (
        ("SiteRegistration", "region", regions),
        ("ParticipantRegistration", "home_region", regions),
        ("PoolDeclaration", "model", models),
        ("OfferPost", "pool_cri", {"pattern": CRI_PATTERN}),
        ("SiteRegistration", "pue", {"pattern": r"^([1-4](\.[0-9]{1,3})?|5(\.0{1,3})?)$"}),
        ("SiteRegistration", "green_share", {"pattern": r"^(0(\.[0-9]{1,4})?|1(\.0{1,4})?)$"}),
    ):
        schema = defs[model]["properties"][prop]
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") == "string":
                branch.update(extra)
            elif branch.get("type") == "number" and prop in DECIMAL_STEPS:
                branch["multipleOf"] = DECIMAL_STEPS[prop]
    for model in ("OfferPost", "OfferAmendment"):
        for branch in defs[model]["properties"]["billing_modes"].get(
            "anyOf", [defs[model]["properties"]["billing_modes"]]
        ):
            if branch.get("type") == "array":
                branch["uniqueItems"] = True  # registration._check_modes
    # OfferAmendment._check: at least one change; a field given is not null (except window_end: null clears it)
    amend = defs["OfferAmendment"]
    for name in AMEND_NOT_NULL:
        prop = amend["properties"][name]
        kept = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
        amend["properties"][name] = {**kept[0], "title": prop.get("title", name)}
    amend["anyOf"] = [{"required": [name]} for name in (*AMEND_NOT_NULL, "window_end")]


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": ERROR_TEXT[status],
        "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}},
    }


@lru_cache(maxsize=1)
def _build() -> dict[str, Any]:
    key_map, defs = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPS:
        params = [p.openapi() for placeholder, p in PATH_PARAMS.items() if placeholder in op.path]
        params += [p.openapi() for p in op.query] + list(op.headers)
        if op.signed:
            params += [{"$ref": f"#/components/parameters/{name}"} for name in SIGNATURE_PARAMS]
        if isinstance(op.response, type):
            schema: dict[str, Any] = key_map[(op.response, "serialization")]
        else:
            schema = op.response or {"type": "object"}
        responses: dict[str, Any] = {
            str(op.ok): {"description": "success", "content": {op.content_type: {"schema": schema}}}
        }
        for extra_status, text in op.extra.items():
            responses[extra_status] = {"description": text, "content": {op.content_type: {"schema": schema}}}
        errors = set(op.errors)
        if op.signed:
            errors |= {401, 403}
        errors |= {400}  # the boundary: control characters in a path or query value, a body that is not clean JSON
        if op.body is not None:
            errors |= {413, 422}
        if op.query:
            errors |= {422}
        for status in sorted(errors):
            responses[str(status)] = _problem_response(status)
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": params,
            "responses": responses,
        }
        if op.body is not None:
            entry["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": key_map[(op.body, "validation")]}},
            }
        if op.signed:
            entry["security"] = [{"httpSignature": []}]
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "hetex exchange API",
            "version": API_VERSION,
            "description": "Heterogeneous AI compute exchange: provider registration, capacity offers and "
            "buyer orders. State-changing requests are signed with RFC 9421 HTTP Message Signatures "
            "(Ed25519) over @method, @target-uri and content-digest, with created and nonce; see "
            "specs/signing.md. Errors are RFC 9457 problem+json.",
            "license": {"name": "Apache-2.0"},
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "parameters": SIGNATURE_PARAMS,
            "securitySchemes": {
                "httpSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": "RFC 9421 signature with Signature-Input and Content-Digest (specs/signing.md); "
                    "keyid = hex C2SP key id of the participant key under the name 'hetex'",
                }
            },
        },
    }


def build_openapi() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy)."""
    return copy.deepcopy(_build())


def openapi_yaml() -> str:
    """The document as the YAML committed in specs/openapi.yaml."""
    header = "# Generated by `python -m exchange.api.openapi > specs/openapi.yaml`; do not edit by hand.\n"
    return header + yaml.safe_dump(build_openapi(), sort_keys=False, allow_unicode=True, width=110)


routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """This API's OpenAPI document."""
    return web.json_response(_build())


def main() -> int:
    """Print the YAML document."""
    sys.stdout.write(openapi_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
