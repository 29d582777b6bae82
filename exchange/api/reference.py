"""Handlers for reference data: health, accelerator catalogue, regions, CRI resolution."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from exchange.api.keys import services
from exchange.api.operations import Api, Args
from exchange.api.params import CRI
from identifiers.catalogue import AcceleratorModel

routes = Api("reference")

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
RESOLVED = {"oneOf": [{"$ref": "#/components/schemas/SiteView"}, {"$ref": "#/components/schemas/PoolView"}]}


@routes.get("/healthz", "healthz", "Liveness and a database round trip", response=HEALTH)
async def healthz(request: web.Request, args: Args) -> web.Response:
    """Liveness plus a database round trip."""
    return web.json_response(await services(request).health.check())


def model_json(model: AcceleratorModel) -> dict[str, Any]:
    """Catalogue entry as JSON (Decimals as strings)."""
    return model.to_dict()


@routes.get("/v1/catalogue/accelerators", "catalogue", "The accelerator catalogue", response=CATALOGUE)
async def accelerators(request: web.Request, args: Args) -> web.Response:
    """The accelerator catalogue with sources, SCU and memory lens."""
    cat = services(request).catalogue
    models = [model_json(m) for m in cat.models]
    return web.json_response(
        {"count": len(models), "vendors": sorted({m.vendor for m in cat.models}), "models": models},
        dumps=_dumps,
    )


@routes.get("/v1/regions", "regions", "Regions and the latency matrix", response=REGIONS)
async def regions(request: web.Request, args: Args) -> web.Response:
    """Regions served, with the approximate round-trip latency matrix."""
    table = services(request).regions
    codes = list(table.codes)
    return web.json_response(
        {
            "regions": [_region_json(table.get(c)) for c in codes],
            "latency_ms": {a: {b: table.latency_ms(a, b) for b in codes} for a in codes},
        },
        dumps=_dumps,
    )


def _region_json(region: Any) -> dict[str, Any]:
    return {
        "code": region.code,
        "name": region.name,
        "name_zh": region.name_zh,
        "hub": region.hub,
        "cluster": region.cluster,
        "roles": list(region.roles),
        "city": region.city,
    }


@routes.get(
    "/v1/resolve/{cri}",
    "resolve",
    "The site or pool a CRI names (or its tombstone); a peer's CRI answers 307 to the owning exchange",
    params=(CRI,),
    response=RESOLVED,
    errors=(404, 422),
)
async def resolve(request: web.Request, args: Args) -> web.Response:
    """The record of the site or pool a CRI names; a CRI of a peer's authority redirects (307) to that peer."""
    svc = services(request)
    cri = args[CRI]
    location = await svc.federation.peers.resolve_location(cri)
    if location is not None:
        raise web.HTTPTemporaryRedirect(location)
    record = await svc.resolve.resolve(cri)
    return web.json_response(record, dumps=_dumps)


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str, ensure_ascii=False)
