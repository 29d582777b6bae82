"""OpenAPI 3.1 description of the HTTP API, generated from the operations declared next to their handlers
(exchange.api.operations) and the pydantic request/response models.

`python -m exchange.api.openapi > specs/openapi.yaml` writes the committed file (a test checks it is
current); the app serves the same document at GET /openapi.json.
"""

from __future__ import annotations

import copy
import sys
from functools import lru_cache
from typing import Any

import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from exchange.api import (
    audit,
    contracts,
    federation,
    hub,
    ledger,
    metrics,
    orders,
    participants,
    reference,
    registration,
    rounds,
    settlements,
)
from exchange.api.operations import Api, Args, Operation
from exchange.api.params import POOL_CRI_PATTERN
from exchange.services.registration import PoolView, SiteView
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


routes = Api("reference")


@routes.get("/openapi.json", "openapi", "This document", response={"type": "object"})
async def openapi_json(request: web.Request, args: Args) -> web.Response:
    """This API's OpenAPI document."""
    return web.json_response(_build())


#: every route table the app serves, in the order the document lists them
TABLES: tuple[Api, ...] = (
    reference.routes,
    metrics.routes,
    routes,
    ledger.routes,
    audit.routes,
    rounds.routes,
    participants.routes,
    registration.routes,
    orders.routes,
    contracts.routes,
    settlements.routes,
    federation.routes,
    hub.routes,
)


def operations() -> list[Operation]:
    """Every declared operation."""
    return [op for table in TABLES for op in table.operations]


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
    408: "The request body did not arrive within the body timeout (HETEX_HTTP_BODY_TIMEOUT_SECONDS); the connection"
    " is closed",
    409: "Conflicts with the current state (tombstoned, already registered, idempotency key reused, ...)",
    410: "Gone: the resource was deliberately ended (offer_withdrawn, with withdrawn_at)",
    413: "Body larger than 1 MiB",
    422: "Invalid input; `field` names the first bad field",
    503: "The exchange cannot serve this now for a reason on its side (code exchange_key_missing: its signing key"
    " is not loaded); Retry-After gives the seconds to wait",
}


def _schemas() -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    ops = operations()
    inputs: set[type[BaseModel]] = {op.body for op in ops if op.body is not None}
    outputs: set[type[BaseModel]] = {op.response for op in ops if isinstance(op.response, type)}
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
    and every map with checked keys is closed to other keys, so a schema-valid body is one the server takes."""
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
            keys = node.get("patternProperties")
            if isinstance(keys, dict) and len(keys) == 1 and "additionalProperties" not in node:
                # a map whose keys the server checks (dict[Pattern, ...]): a key off the pattern is refused,
                # so the schema closes the map rather than leaving such keys free
                node["additionalProperties"] = False
                node.setdefault("propertyNames", {})["pattern"] = next(iter(keys))
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
        ("OfferPost", "pool_cri", {"pattern": POOL_CRI_PATTERN}),
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
    out: dict[str, Any] = {
        "description": ERROR_TEXT[status],
        "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}},
    }
    if status == 503:
        out["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return out


@lru_cache(maxsize=1)
def _build() -> dict[str, Any]:
    key_map, defs = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in operations():
        params = [p.openapi() for p in op.params if p.where == "path"]
        params += [p.openapi() for p in op.params if p.where == "query"] + [dict(h) for h in op.headers]
        if op.signed:
            params += [{"$ref": f"#/components/parameters/{name}"} for name in SIGNATURE_PARAMS]
        if isinstance(op.response, type):
            schema: dict[str, Any] = key_map[(op.response, "serialization")]
        else:
            schema = dict(op.response or {"type": "object"})
        responses: dict[str, Any] = {
            str(op.ok): {"description": "success", "content": {op.content_type: {"schema": schema}}}
        }
        for extra_status, text in op.extra.items():
            responses[extra_status] = {"description": text, "content": {op.content_type: {"schema": schema}}}
        errors = set(op.errors)
        if op.signed:
            errors |= {401, 403, 503}  # 503: the exchange's signing key is missing (identity.ExchangeKeyMissingError)
        errors |= {400}  # the boundary: control characters in a path or query value, a body that is not clean JSON
        if op.body is not None:
            errors |= {413, 422}
        if op.method != "get":
            errors |= {408}  # exchange.api.connections: every body must arrive in time
        if any(p.where == "query" for p in op.params):
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
            "specs/signing.md. Errors are RFC 9457 problem+json, also where no operation matches: a path not "
            "listed here answers 404 (code not_found) and a method not listed for a path 405 (code "
            "method_not_allowed, with the Allow header and `allowed_methods`).",
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


def main() -> int:
    """Print the YAML document."""
    sys.stdout.write(openapi_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
