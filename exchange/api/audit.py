"""Handlers for regulator audit exports: start a job, read its status and progress, download the bundle."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import require_principal
from exchange.api.keys import services
from exchange.api.parsing import parse_body
from exchange.api.responses import path_id
from exchange.services.audit import ExportRequest

routes = web.RouteTableDef()

BUNDLE_MEDIA_TYPE = "application/gzip"


@routes.post("/v1/audit/exports")
async def create_export(request: web.Request) -> web.Response:
    """Start an export (regulators only); 202 with the job's status and its Location."""
    who = require_principal(request)
    who.require_role("regulator", action="request audit exports")
    body = await parse_body(request, ExportRequest)
    status = await services(request).audit.create_export(who.id, body)
    location = f"/v1/audit/exports/{status.id}"
    return web.json_response(status.to_json(), status=202, headers={"Location": location})


@routes.get("/v1/audit/exports/{id}")
async def get_export(request: web.Request) -> web.Response:
    """Status and progress of one of the caller's exports."""
    who = require_principal(request)
    who.require_role("regulator", action="read audit exports")
    status = await services(request).audit.status(who.id, path_id(request))
    return web.json_response(status.to_json())


@routes.get("/v1/audit/exports/{id}/bundle")
async def get_bundle(request: web.Request) -> web.FileResponse:
    """The finished bundle (tar.gz), streamed from disk."""
    who = require_principal(request)
    who.require_role("regulator", action="download audit bundles")
    export_id = path_id(request)
    path = await services(request).audit.bundle_path(who.id, export_id)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": BUNDLE_MEDIA_TYPE,
            "Content-Disposition": f'attachment; filename="hetex-audit-{export_id}.tar.gz"',
        },
    )
