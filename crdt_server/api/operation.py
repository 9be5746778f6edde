"""One REST operation as data, and the Starlette routes built from a table of them.

Every REST endpoint is declared once as an ``Operation`` (``api/routes.py`` holds the table): method,
path, handler, who may call it, its request model, its responses and the errors it can answer.
``routes_from`` turns the table into Starlette routes (one route per path, so a wrong method gets a
405 whose ``Allow`` header lists every method of the path; unknown query parameters answer 422),
and ``api/openapi.py`` turns the same table into the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..domain import Role
from .errors import ApiError

Handler = Callable[[Request], Awaitable[Response]]
Security = Literal["none", "session", "api_key"]

REF = "#/components/schemas/{model}"

# Standard wording of the error responses; every one has the Error body.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Malformed JSON (`malformed_json`) or an unreadable request."),
    401: ("Unauthorized", "Missing or invalid bearer token: session token, or API key where one is required "
                          "(`unauthorized`, `invalid_token`)."),
    403: ("Forbidden", "The token belongs to another session, or its role may not do this (`forbidden`), or Run "
                       "is switched off for the candidate (`run_disabled`)."),
    404: ("NotFound", "No such session: never existed, deleted or expired (`session_not_found`)."),
    409: ("Conflict", "The session has ended and is read-only (`session_ended`), or the editor is locked for the "
                      "candidate (`session_locked`)."),
    413: ("PayloadTooLarge", "The body is larger than `--max-body-size` (`payload_too_large`)."),
    422: ("InvalidField", "A body field or query parameter is missing, unknown, of the wrong type or out of range "
                          "(`invalid_field`)."),
    429: ("RateLimited", "Rate limited (`rate_limited`); see `Retry-After`."),
    503: ("Unavailable", "The service this operation needs is unavailable."),
}


def error_entry(status: int) -> tuple[str, str]:
    return ERRORS.get(status, (f"Error{status}", "Error."))

RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                               "schema": {"type": "integer", "minimum": 1}}}


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: Mapping[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    endpoint: Handler
    operation_id: str
    summary: str
    description: str = ""
    tag: str = "sessions"
    security: Security = "none"
    roles: tuple[Role, ...] = ()
    request: type[BaseModel] | None = None
    request_required: bool = True
    # non-error responses: status -> (description, body model or None)
    responses: Mapping[int, tuple[str, type[BaseModel] | None]] = field(default_factory=dict)
    errors: tuple[int, ...] = ()  # beyond those implied by security, request body and query
    query: tuple[QueryParam, ...] = ()
    response_headers: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    raw_response: Mapping[str, Any] | None = None  # a literal JSON schema for a 200 not modelled in pydantic
    raw_media_type: str = "application/json"  # the media type of that 200 (e.g. /metrics: text/plain)
    strict_query: bool = True  # unknown query parameters answer 422 (False: ignored, e.g. for health probes)

    def error_statuses(self) -> list[int]:
        statuses = set(self.errors)
        if self.security == "session":
            statuses |= {401, 403, 404}
        elif self.security == "api_key":
            statuses.add(401)
        if "{session_id}" in self.path:
            statuses.add(404)
        if self.request is not None:
            statuses |= {400, 413, 422}
        if self.strict_query:
            statuses.add(422)  # unknown query parameters
        return sorted(statuses)


# -- routes ----------------------------------------------------------------------------------------


def _dispatcher(path: str, ops: dict[str, Operation]) -> Handler:
    methods = dict(ops)
    if "GET" in methods:
        methods.setdefault("HEAD", methods["GET"])
    allow = ", ".join(m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE") if m in methods)

    async def endpoint(request: Request) -> Response:
        op = methods.get(request.method)
        if op is None:
            raise ApiError(405, "method_not_allowed", f"{request.method} is not allowed here; use {allow}.",
                           {"Allow": allow})
        known = {q.name for q in op.query}
        unknown = sorted(k for k in request.query_params.keys() if k not in known) if op.strict_query else []
        if unknown:  # like unknown body fields: a typo (?limt=) must not pass silently
            name = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:37] + "..."
            raise ApiError(422, "invalid_field", f"unknown query parameter {name!r}")
        return await op.endpoint(request)

    endpoint.__name__ = "dispatch_" + re.sub(r"\W+", "_", path).strip("_")
    return endpoint


async def not_found(request: Request) -> Response:
    raise ApiError(404, "not_found", "No such endpoint.")


class _AnyMethod:
    """An ASGI app object (not a function), so Starlette's ``Route`` matches it for every method
    and leaves the 405 (with an ``Allow`` header naming every method of the path) to us."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _route(path: str, endpoint: Handler) -> Route:
    return Route(path, _AnyMethod(request_response(endpoint)), name=endpoint.__name__)


def routes_from(operations: Sequence[Operation]) -> list[BaseRoute]:
    """One Starlette route per path (dispatching on the method) plus a JSON 404 for every other path.

    The catch-all also stops Starlette from redirecting ``/x/`` to ``/x`` (it never answers 3xx).
    """
    by_path: dict[str, dict[str, Operation]] = {}
    for op in operations:
        ops = by_path.setdefault(op.path, {})
        if op.method in ops:
            raise ValueError(f"duplicate operation {op.method} {op.path}")
        ops[op.method] = op
    return [_route(path, _dispatcher(path, ops)) for path, ops in by_path.items()]


def catch_all() -> Route:
    return _route("/{path:path}", not_found)
