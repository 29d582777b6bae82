"""Handlers for reference data: health, accelerator catalogue, regions, CRI resolution."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from exchange.api.keys import services
from exchange.api.params import CRI
from identifiers.catalogue import AcceleratorModel

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness plus a database round trip."""
    return web.json_response(await services(request).health.check())


def model_json(model: AcceleratorModel) -> dict[str, Any]:
    """Catalogue entry as JSON (Decimals as strings)."""
    return model.to_dict()


@routes.get("/v1/catalogue/accelerators")
async def accelerators(request: web.Request) -> web.Response:
    """The accelerator catalogue with sources, SCU and memory lens."""
    cat = services(request).catalogue
    models = [model_json(m) for m in cat.models]
    return web.json_response(
        {"count": len(models), "vendors": sorted({m.vendor for m in cat.models}), "models": models},
        dumps=_dumps,
    )


@routes.get("/v1/regions")
async def regions(request: web.Request) -> web.Response:
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


@routes.get("/v1/resolve/{cri}")
async def resolve(request: web.Request) -> web.Response:
    """The record of the site or pool a CRI names; a CRI of a peer's authority redirects (307) to that peer."""
    svc = services(request)
    cri = CRI.value(request)
    location = await svc.federation.peers.resolve_location(cri)
    if location is not None:
        raise web.HTTPTemporaryRedirect(location)
    record = await svc.resolve.resolve(cri)
    return web.json_response(record, dumps=_dumps)


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str, ensure_ascii=False)
