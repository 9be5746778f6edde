"""The route table and the OpenAPI 3.1 document generated from it.

Every REST endpoint is declared once as an ``Operation``: method, path, handler, who may call it,
its request model, its responses (pydantic models) and the errors it can answer. ``routes_from``
turns the table into Starlette routes (one route per path, so a wrong method gets a 405 whose
``Allow`` header lists every method of the path), and ``build_document`` into the OpenAPI document
served at ``GET /openapi.json`` and committed as ``docs/openapi.yaml``.

Regenerate the committed copy with::

    uv run python -m crdt_server.api.openapi > docs/openapi.yaml
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from .auth import SESSION_ID_PATTERN
from .errors import ApiError
from .models import Error

Handler = Callable[[Request], Awaitable[Response]]
Security = Literal["none", "session", "api_key"]

REF = "#/components/schemas/{model}"

# Standard wording of the error responses; every one has the Error body.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Malformed JSON (`malformed_json`) or an unreadable request."),
    401: ("Unauthorized", "Missing or invalid bearer token: session token, or API key where one is required "
                          "(`unauthorized`, `invalid_token`)."),
    403: ("Forbidden", "The token belongs to another session, or its role may not do this (`forbidden`)."),
    404: ("NotFound", "No such session: never existed, deleted or expired (`session_not_found`)."),
    409: ("Conflict", "The session has ended and is read-only (`session_ended`)."),
    413: ("PayloadTooLarge", "The body is larger than `--max-body-size` (`payload_too_large`)."),
    422: ("InvalidField", "A body field or query parameter is missing, unknown, of the wrong type or out of range "
                          "(`invalid_field`)."),
    429: ("RateLimited", "Rate limited (`rate_limited`); see `Retry-After`."),
    503: ("Unavailable", "The service this operation needs is unavailable."),
}


def _error_entry(status: int) -> tuple[str, str]:
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
    roles: tuple[str, ...] = ()
    request: type[BaseModel] | None = None
    request_required: bool = True
    # non-error responses: status -> (description, body model or None)
    responses: Mapping[int, tuple[str, type[BaseModel] | None]] = field(default_factory=dict)
    errors: tuple[int, ...] = ()  # beyond those implied by security, request body and query
    query: tuple[QueryParam, ...] = ()
    response_headers: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    raw_response: Mapping[str, Any] | None = None  # a literal JSON schema for a 200 not modelled in pydantic
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


# -- document --------------------------------------------------------------------------------------


def _content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def build_document(operations: Sequence[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for the given route table (deterministic: same table, same dict)."""
    wanted: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [(Error, "serialization")]
    for op in operations:
        if op.request is not None:
            wanted.append((op.request, "validation"))
        for _, model in op.responses.values():
            if model is not None:
                wanted.append((model, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, defs = models_json_schema(unique, by_alias=True, ref_template=REF)
    schemas = {name: _untitled_properties(schema) for name, schema in sorted(defs.get("$defs", {}).items())}

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    used = sorted({status for op in operations for status in op.error_statuses()})
    error_schema = refs[(Error, "serialization")]
    responses = {}
    for status in used:
        name, desc = _error_entry(status)
        responses[name] = {"description": desc, "content": _content(error_schema)}
        if status == 401:
            responses[name]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string", "example": "Bearer"}}}

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "crdt-server",
            "version": __version__,
            "description": (
                "REST API of crdt-server, a self-hosted Yjs-compatible server for live collaborative coding "
                "interviews. JSON bodies, camelCase fields. Every error answers "
                '`{"error": {"code": "<snake_case>", "message": "<human sentence>"}}`. '
                "Live editors connect to `ws://HOST:PORT/ws/sessions/{id}?token=…` (y-websocket protocol); "
                "see docs/websocket-protocol.md."
            ),
        },
        "tags": [
            {"name": "sessions", "description": "Interview sessions, their code, participants and history."},
            {"name": "meta", "description": "Server health and this document."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "sessionToken": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A role token from `POST /api/sessions` (interviewer, candidate or observer); "
                                   "valid for its own session only.",
                },
                "apiKey": {
                    "type": "http", "scheme": "bearer",
                    "description": "The server's API key (`CRDT_SERVER_API_KEY`); only needed when one is set.",
                },
            },
        },
    }


def _untitled_properties(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's per-property titles ("Updatedat"): the property names say it better."""
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {
            name: {k: v for k, v in prop.items() if k != "title"} for name, prop in out["properties"].items()
        }
    return out


def _operation(op: Operation, refs: Mapping[Any, Any]) -> dict[str, Any]:
    description = op.description
    if op.roles:
        description = (description + "\n\n" if description else "") + "Roles: " + ", ".join(op.roles) + "."
    out: dict[str, Any] = {"tags": [op.tag], "summary": op.summary, "operationId": op.operation_id}
    if description:
        out["description"] = description
    if op.roles:
        out["x-roles"] = list(op.roles)
    if op.security == "session":
        out["security"] = [{"sessionToken": []}]
    elif op.security == "api_key":
        out["security"] = [{}, {"apiKey": []}]
    else:
        out["security"] = []

    parameters: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", op.path):
        parameters.append({
            "name": name, "in": "path", "required": True,
            "description": "Session id, as returned by `POST /api/sessions`." if name == "session_id" else "",
            "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
        })
    for q in op.query:
        param: dict[str, Any] = {"name": q.name, "in": "query", "required": False, "schema": dict(q.schema)}
        if q.description:
            param["description"] = q.description
        parameters.append(param)
    if parameters:
        out["parameters"] = parameters

    if op.request is not None:
        out["requestBody"] = {"required": op.request_required, "content": _content(refs[(op.request, "validation")])}

    responses: dict[str, Any] = {}
    for status, (desc, model) in sorted(op.responses.items()):
        response: dict[str, Any] = {"description": desc}
        if model is not None:
            response["content"] = _content(refs[(model, "serialization")])
        elif status == 200 and op.raw_response is not None:
            response["content"] = _content(op.raw_response)
        if status in op.response_headers:
            response["headers"] = {k: dict(v) for k, v in op.response_headers[status].items()}
        responses[str(status)] = response
    for status in op.error_statuses():
        name, desc = _error_entry(status)
        if status in op.response_headers:
            responses[str(status)] = {
                "description": desc, "content": _content(refs[(Error, "serialization")]),
                "headers": {k: dict(v) for k, v in op.response_headers[status].items()},
            }
        else:
            responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    out["responses"] = responses
    return out


# -- serving and the committed copy ----------------------------------------------------------------


@cache
def document() -> dict[str, Any]:
    from ..app import operations  # the route table lives with the app; imported late (no cycle)

    return build_document(operations())


async def serve_openapi(request: Request) -> Response:
    return JSONResponse(document())


def to_yaml(doc: Mapping[str, Any]) -> str:
    try:
        import yaml
    except ImportError:  # JSON is valid YAML; the dev environment has PyYAML for the readable form
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    header = "# Generated by `uv run python -m crdt_server.api.openapi > docs/openapi.yaml`; do not edit.\n"
    return header + yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True, width=110)


def main() -> None:
    sys.stdout.write(to_yaml(document()))


if __name__ == "__main__":
    main()
