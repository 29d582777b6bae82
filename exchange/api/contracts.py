"""Handlers for contracts and their usage: list/read, provider confirmation, cancellation, signed usage."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import NONCE_CLAIM, remembers_nonce
from exchange.api.boundary import parsed_body
from exchange.api.keys import services
from exchange.api.operations import Api, Args
from exchange.api.params import ID, SITE_CRI_PATTERN, ChoiceParam, CriParam, IntParam
from exchange.api.responses import model_response
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
from exchange.services.fields import MAX_SAFE_INT

routes = Api("contracts")

LIST_QUERY = (
    ChoiceParam("status", "query", "only contracts in this state", choices=CONTRACT_STATUSES),
    IntParam("limit", "query", "at most this many (default 100)", lo=1, hi=10_000),
    CriParam(
        "site",
        "query",
        "only contracts on this site's pools (a site CRI, specs/cri.abnf): what a node agent meters",
        pattern=SITE_CRI_PATTERN,
        max_length=100,
        hint="a site CRI (specs/cri.abnf)",
        kind="site",
    ),
    IntParam("ending_after", "query", "only contracts ending after this instant (epoch s)", lo=0, hi=MAX_SAFE_INT),
)
STATUS, LIMIT, SITE, ENDING_AFTER = LIST_QUERY


@routes.get(
    "/v1/contracts",
    "listContracts",
    "The caller's contracts (as buyer or provider), newest first",
    params=LIST_QUERY,
    response=ContractList,
    signed=True,
    errors=(403, 422),
)
async def list_contracts(request: web.Request, args: Args) -> web.Response:
    """The caller's contracts (as buyer or provider), newest first."""
    items = await services(request).contracts.list_for(
        args.who,
        status=args.get(STATUS),
        limit=args.get(LIMIT, 100),
        site=args.get(SITE),
        ending_after=args.get(ENDING_AFTER),
    )
    return model_response(ContractList.model_validate({"items": items}))


@routes.get(
    "/v1/contracts/{id}",
    "getContract",
    "One contract, for its buyer or provider (or the operator and regulators)",
    params=(ID,),
    response=ContractView,
    signed=True,
    errors=(403, 404, 422),
)
async def get_contract(request: web.Request, args: Args) -> web.Response:
    """One contract, for its buyer or provider."""
    return model_response(ContractView.model_validate(await services(request).contracts.get(args.who, args[ID])))


@routes.post(
    "/v1/contracts/{id}/confirm",
    "confirmContract",
    "The provider confirms the contract's start",
    params=(ID,),
    response=ContractView,
    signed=True,
    errors=(403, 404, 409, 422),
)
async def confirm(request: web.Request, args: Args) -> web.Response:
    """The provider confirms the contract's start."""
    view = await services(request).contracts.confirm(args.who, args[ID])
    return model_response(ContractView.model_validate(view))


@routes.post(
    "/v1/contracts/{id}/cancel",
    "cancelContract",
    "Buyer or provider cancels: free before start, the used part is settled after (specs/billing.md 4)",
    params=(ID,),
    response=ContractView,
    body=CancelBody,
    signed=True,
    errors=(403, 404, 409, 413, 422),
)
async def cancel(request: web.Request, args: Args) -> web.Response:
    """Buyer or provider cancels (rules: specs/billing.md section 4)."""
    view = await services(request).contracts.cancel(args.who, args[ID], args.body(CancelBody).reason)
    return model_response(ContractView.model_validate(view))


@routes.post(
    "/v1/contracts/{id}/usage",
    "reportUsage",
    "A node-signed usage report (DSSE envelope, specs/billing.md 5); 201 new, 200 an identical retry",
    params=(ID,),
    ok=201,
    response=UsageView,
    body=UsageEnvelope,
    signed=True,
    errors=(403, 404, 409, 413, 422),
    extra={"200": "the report first accepted under this meter and sequence number"},
)
async def report_usage(request: web.Request, args: Args) -> web.Response:
    """A node-signed usage report (DSSE envelope body); 201 when new, 200 for an identical retry.
    The body was validated as exactly the DSSE members; the bytes stored are the ones sent."""
    view, created = await services(request).usage.report(args.who, args[ID], parsed_body(request))
    return model_response(UsageView.model_validate(view), 201 if created else 200)


@remembers_nonce
@routes.post(
    "/v1/usage/batch",
    "reportUsageBatch",
    "Many node-signed usage reports (any contracts and meters of the provider) in one signed request, "
    "one transaction; one result per report: accepted, duplicate, or refused with the single report's "
    "error (specs/billing.md 5.1)",
    response=UsageBatchResult,
    body=UsageBatch,
    signed=True,
    errors=(413, 422),
)
async def report_usage_batch(request: web.Request, args: Args) -> web.Response:
    """Many node-signed usage reports in one signed request; one result per report (specs/billing.md 5.1).
    Each item was validated as exactly the DSSE members; the bytes stored are the ones sent. The request's
    nonce is remembered in the reports' transaction."""
    args.body(UsageBatch)
    envelopes = parsed_body(request)["reports"]
    result = await services(request).usage.report_batch(args.who, envelopes, request.get(NONCE_CLAIM))
    return model_response(UsageBatchResult.model_validate(result))


@routes.get(
    "/v1/contracts/{id}/usage",
    "listUsage",
    "Every usage report of a contract, with its flags",
    params=(ID,),
    response=UsageList,
    signed=True,
    errors=(403, 404, 422),
)
async def list_usage(request: web.Request, args: Args) -> web.Response:
    """Every usage report of a contract with its flags."""
    items = await services(request).usage.list_for(args.who, args[ID])
    return model_response(UsageList.model_validate({"items": items}))
