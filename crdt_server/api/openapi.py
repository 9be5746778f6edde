"""The OpenAPI 3.1 document, generated from the route table (``api/routes.py``).

``build_document`` turns the table of ``Operation``s into the document served at
``GET /openapi.json`` and committed as ``docs/openapi.yaml``.

Regenerate the committed copy with::

    uv run python -m crdt_server.api.openapi > docs/openapi.yaml
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from .auth import SESSION_ID_PATTERN
from .models import Error
from .operation import REF, Operation, error_entry
from .routes import operations


def _content(schema: Mapping[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": dict(schema)}}


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
        name, desc = error_entry(status)
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
            {"name": "meta", "description": "Server health, metrics and this document."},
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
            response["content"] = _content(op.raw_response, op.raw_media_type)
        if status in op.response_headers:
            response["headers"] = {k: dict(v) for k, v in op.response_headers[status].items()}
        responses[str(status)] = response
    for status in op.error_statuses():
        name, desc = error_entry(status)
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
    """The server's own document (the app serves it at ``GET /openapi.json``)."""
    return build_document(operations())


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
