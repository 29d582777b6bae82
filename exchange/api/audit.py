"""Handlers for regulator audit exports: start a job, read its status and progress, download the bundle."""

from __future__ import annotations

from aiohttp import web

from exchange.api.keys import services
from exchange.api.operations import Api, Args
from exchange.api.params import ID
from exchange.services.audit import ExportRequest

routes = Api("audit")

BUNDLE_MEDIA_TYPE = "application/gzip"
EXPORT_STATUS = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {"id": {"type": "string"}, "status": {"type": "string"}},
}


@routes.post(
    "/v1/audit/exports",
    "createAuditExport",
    "Start an audit export for a period (regulators only); 202 with the job status and Location",
    ok=202,
    response=EXPORT_STATUS,
    body=ExportRequest,
    signed=True,
    role=("regulator", "request audit exports"),
    errors=(403, 409, 413, 422),
)
async def create_export(request: web.Request, args: Args) -> web.Response:
    """Start an export (regulators only); 202 with the job's status and its Location."""
    status = await services(request).audit.create_export(args.who.id, args.body(ExportRequest))
    location = f"/v1/audit/exports/{status.id}"
    return web.json_response(status.to_json(), status=202, headers={"Location": location})


@routes.get(
    "/v1/audit/exports/{id}",
    "getAuditExport",
    "Status and progress of one of the caller's exports",
    params=(ID,),
    response=EXPORT_STATUS,
    signed=True,
    role=("regulator", "read audit exports"),
    errors=(403, 404, 422),
)
async def get_export(request: web.Request, args: Args) -> web.Response:
    """Status and progress of one of the caller's exports."""
    return web.json_response((await services(request).audit.status(args.who.id, args[ID])).to_json())


@routes.get(
    "/v1/audit/exports/{id}/bundle",
    "getAuditBundle",
    "The finished bundle (tar.gz)",
    params=(ID,),
    response={"type": "string", "format": "binary"},
    content_type=BUNDLE_MEDIA_TYPE,
    signed=True,
    role=("regulator", "download audit bundles"),
    errors=(403, 404, 409, 422),
)
async def get_bundle(request: web.Request, args: Args) -> web.FileResponse:
    """The finished bundle (tar.gz), streamed from disk."""
    export_id = args[ID]
    path = await services(request).audit.bundle_path(args.who.id, export_id)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": BUNDLE_MEDIA_TYPE,
            "Content-Disposition": f'attachment; filename="hetex-audit-{export_id}.tar.gz"',
        },
    )
