"""Each HTTP operation declared once, where its handler is: method, path, parameters, body, responses, errors
and who may call it. The route's wrapper parses exactly what is declared before the handler runs (the handler
reads the parsed values from `Args`, and only declared ones), and `exchange.api.openapi` generates
specs/openapi.yaml from the same declarations, so the published description cannot drift from the server.

    api = Api("orders")

    @api.get("/v1/orders/{id}", "getOrder", "One of the caller's orders", params=(ID,), response=OrderView,
             signed=True, errors=(403, 404, 422))
    async def get_order(request: web.Request, args: Args) -> web.Response:
        return model_response(await services(request).orders.get(args.who, args[ID]))
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypedDict, TypeVar, Unpack, overload

import pydantic
from aiohttp import web

from exchange.api.auth import PRINCIPAL, require_principal
from exchange.api.params import Param
from exchange.api.parsing import parse_body
from exchange.services.principals import Principal

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)
Method = Literal["get", "post", "put", "patch", "delete"]
#: a JSON schema, or a pydantic model whose (serialization) schema describes the response
Schema = type[pydantic.BaseModel] | Mapping[str, Any]
#: `{id:[0-9a-f]...}` in an aiohttp path is `{id}` in the OpenAPI path
_PLACEHOLDER: Final = re.compile(r"\{(\w+)(?::(?:[^{}]|\{[0-9,]+\})*)?\}")


@dataclass(frozen=True)
class Operation:
    """One operation as published and as enforced: the spec generator and the route wrapper both read this."""

    method: Method
    route_path: str
    operation_id: str
    summary: str
    tag: str
    ok: int = 200
    response: Schema | None = None
    body: type[pydantic.BaseModel] | None = None
    body_required: bool = True
    #: the spec lists the RFC 9421 signature (security scheme, 401/403)
    signed: bool = False
    #: the wrapper requires a known participant before parsing (default: `signed`); False where the handler or
    #: service verifies the signature itself (self-registration, peer exchanges, a log entry's own 401)
    principal: bool | None = None
    #: (role, action): the caller must have this role (403 role_forbidden)
    role: tuple[str, str] | None = None
    errors: tuple[int, ...] = ()
    params: tuple[Param[Any], ...] = ()
    headers: tuple[Mapping[str, Any], ...] = ()
    content_type: str = "application/json"
    #: further success statuses with their description (same content as `ok`)
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The OpenAPI path (placeholders without their aiohttp regex)."""
        return _PLACEHOLDER.sub(r"{\1}", self.route_path)

    @property
    def needs_principal(self) -> bool:
        """Whether the wrapper refuses a caller who is not a known participant."""
        return self.signed if self.principal is None else self.principal

    def check(self) -> None:
        """Refuse at import a declaration whose path placeholders and path parameters differ."""
        placeholders = set(_PLACEHOLDER.findall(self.route_path))
        declared = {p.name for p in self.params if p.where == "path"}
        if placeholders != declared:
            raise TypeError(f"{self.operation_id}: path placeholders {placeholders} but path params {declared}")
        if len({(p.where, p.name) for p in self.params}) != len(self.params):
            raise TypeError(f"{self.operation_id}: a parameter is declared twice")


class Decl(TypedDict, total=False):
    """The keywords of a declaration (Operation's fields after the summary), so mypy checks each one."""

    tag: str
    ok: int
    response: Schema | None
    body: type[pydantic.BaseModel] | None
    body_required: bool
    signed: bool
    principal: bool | None
    role: tuple[str, str] | None
    errors: tuple[int, ...]
    params: tuple[Param[Any], ...]
    headers: tuple[Mapping[str, Any], ...]
    content_type: str
    extra: Mapping[str, str]


class Args:
    """What the wrapper parsed for one request: the declared parameters' values, the body and the caller."""

    def __init__(self, op: Operation, values: dict[Param[Any], Any], body: Any, caller: Principal | None) -> None:
        self._op, self._values, self._body, self.caller = op, values, body, caller

    @property
    def who(self) -> Principal:
        """The authenticated participant (the operation declares it needs one)."""
        assert self.caller is not None and self._op.needs_principal, f"{self._op.operation_id} takes no principal"
        return self.caller

    def _lookup(self, param: Param[Any]) -> Any:
        if param not in self._values:
            raise KeyError(f"{param.where} parameter {param.name} is not declared on {self._op.operation_id}")
        return self._values[param]

    def __getitem__(self, param: Param[T]) -> T:
        """The value of a path or required parameter."""
        value = self._lookup(param)
        assert value is not None, f"{param.name} is optional: use get()"
        return value

    @overload
    def get(self, param: Param[T]) -> T | None: ...
    @overload
    def get(self, param: Param[T], default: T) -> T: ...
    def get(self, param: Param[T], default: T | None = None) -> T | None:
        """The value of a declared parameter, or `default` when absent."""
        value = self._lookup(param)
        return default if value is None else value

    def body(self, model: type[M]) -> M:
        """The body validated into the declared model (a default instance when optional and absent)."""
        assert model is self._op.body, f"{self._op.operation_id} declares body {self._op.body}, not {model}"
        return self._body if self._body is not None else model()


Handler = Callable[[web.Request, Args], Awaitable[web.StreamResponse]]
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Api(web.RouteTableDef):
    """A route table whose routes are declared operations (see the module docstring)."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.operations: list[Operation] = []

    def operation(
        self, method: Method, path: str, operation_id: str, summary: str, **decl: Unpack[Decl]
    ) -> Callable[[Handler], Route]:
        """Declare an operation and register its handler, wrapped to parse what is declared."""
        op = Operation(method, path, operation_id, summary, **{"tag": self.tag, **decl})  # type: ignore[arg-type]
        op.check()

        def register(handler: Handler) -> Route:
            async def route(request: web.Request) -> web.StreamResponse:
                return await handler(request, await parse(op, request))

            route.__name__ = route.__qualname__ = handler.__name__
            route.__doc__ = handler.__doc__
            # markers set on the handler (remembers_nonce, the console's form marker) hold for the route too,
            # whichever side of the route decorator they were applied on
            route.__dict__.update(getattr(handler, "__dict__", {}))
            self.route(method.upper(), path)(route)
            self.operations.append(op)
            return route

        return register

    def get(  # type: ignore[override]
        self, path: str, operation_id: str, summary: str, **decl: Unpack[Decl]
    ) -> Callable[[Handler], Route]:
        """Declare a GET."""
        return self.operation("get", path, operation_id, summary, **decl)

    def post(  # type: ignore[override]
        self, path: str, operation_id: str, summary: str, **decl: Unpack[Decl]
    ) -> Callable[[Handler], Route]:
        """Declare a POST."""
        return self.operation("post", path, operation_id, summary, **decl)

    def patch(  # type: ignore[override]
        self, path: str, operation_id: str, summary: str, **decl: Unpack[Decl]
    ) -> Callable[[Handler], Route]:
        """Declare a PATCH."""
        return self.operation("patch", path, operation_id, summary, **decl)

    def delete(  # type: ignore[override]
        self, path: str, operation_id: str, summary: str, **decl: Unpack[Decl]
    ) -> Callable[[Handler], Route]:
        """Declare a DELETE."""
        return self.operation("delete", path, operation_id, summary, **decl)


async def parse(op: Operation, request: web.Request) -> Args:
    """Caller (when required), then role, parameters in declared order, then the body; the first refusal wins."""
    caller = require_principal(request) if op.needs_principal else request.get(PRINCIPAL)
    if op.role is not None and caller is not None:
        caller.require_role(op.role[0], action=op.role[1])
    values = {p: p.parse(request) for p in op.params}
    body = None
    if op.body is not None and (op.body_required or request.body_exists):  # an optional body: `null` is a body
        body = await parse_body(request, op.body)
    return Args(op, values, body, caller)
