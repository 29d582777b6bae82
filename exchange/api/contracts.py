"""Handlers for contracts and their usage: list/read, provider confirmation, cancellation, signed usage."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import NONCE_CLAIM, remembers_nonce, require_principal
from exchange.api.boundary import parsed_body
from exchange.api.keys import services
from exchange.api.params import ChoiceParam, IntParam
from exchange.api.parsing import parse_body
from exchange.api.responses import model_response, path_id
from exchange.services.contract_views import (
    CancelBody,
    ContractList,
    ContractView,
    UsageBatch,
    UsageBatchResult,
    UsageEnvelope,
    UsageList,
    UsageView,
)
from exchange.services.contracts import CONTRACT_STATUSES

routes = web.RouteTableDef()

LIST_QUERY = (
    ChoiceParam("status", "query", "only contracts in this state", choices=CONTRACT_STATUSES),
    IntParam("limit", "query", "at most this many (default 100)", lo=1, hi=10_000),
)
STATUS, LIMIT = LIST_QUERY


@routes.get("/v1/contracts")
async def list_contracts(request: web.Request) -> web.Response:
    """The caller's contracts (as buyer or provider), newest first."""
    who = require_principal(request)
    items = await services(request).contracts.list_for(
        who, status=STATUS.parse(request), limit=LIMIT.value(request, 100)
    )
    return model_response(ContractList.model_validate({"items": items}))


@routes.get("/v1/contracts/{id}")
async def get_contract(request: web.Request) -> web.Response:
    """One contract, for its buyer or provider."""
    who = require_principal(request)
    return model_response(ContractView.model_validate(await services(request).contracts.get(who, path_id(request))))


@routes.post("/v1/contracts/{id}/confirm")
async def confirm(request: web.Request) -> web.Response:
    """The provider confirms the contract's start."""
    who = require_principal(request)
    view = await services(request).contracts.confirm(who, path_id(request))
    return model_response(ContractView.model_validate(view))


@routes.post("/v1/contracts/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    """Buyer or provider cancels (rules: specs/billing.md section 4)."""
    who = require_principal(request)
    body = await parse_body(request, CancelBody)
    view = await services(request).contracts.cancel(who, path_id(request), body.reason)
    return model_response(ContractView.model_validate(view))


@routes.post("/v1/contracts/{id}/usage")
async def report_usage(request: web.Request) -> web.Response:
    """A node-signed usage report (DSSE envelope body); 201 when new, 200 for an identical retry."""
    who = require_principal(request)
    await parse_body(request, UsageEnvelope)  # exactly the DSSE members; the bytes stored are the ones sent
    envelope = parsed_body(request)
    view, created = await services(request).usage.report(who, path_id(request), envelope)
    return model_response(UsageView.model_validate(view), 201 if created else 200)


@routes.post("/v1/usage/batch")
@remembers_nonce
async def report_usage_batch(request: web.Request) -> web.Response:
    """Many node-signed usage reports in one signed request; one result per report (specs/billing.md 5.1).
    The request's nonce is remembered in the reports' transaction."""
    who = require_principal(request)
    await parse_body(request, UsageBatch)  # each item exactly the DSSE members; the bytes stored are the ones sent
    envelopes = parsed_body(request)["reports"]
    result = await services(request).usage.report_batch(who, envelopes, request.get(NONCE_CLAIM))
    return model_response(UsageBatchResult.model_validate(result))


@routes.get("/v1/contracts/{id}/usage")
async def list_usage(request: web.Request) -> web.Response:
    """Every usage report of a contract with its flags."""
    who = require_principal(request)
    items = await services(request).usage.list_for(who, path_id(request))
    return model_response(UsageList.model_validate({"items": items}))
