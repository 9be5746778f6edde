"""The OpenAPI document: committed copy in step with the code, and the live server conforming to it.

schemathesis generates requests for every operation from the document the server serves, once
with a valid interviewer token and once without any, and fails on any 5xx, any undocumented
status and any response that does not match its schema.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings

from crdt_server.api.auth import SESSION_ID
from crdt_server.api.openapi import build_document, to_yaml
from crdt_server.api.routes import operations

from .conftest import ROOT, ServerProcess

COMMITTED = ROOT / "docs" / "openapi.yaml"
REGENERATE = "uv run python -m crdt_server.api.openapi > docs/openapi.yaml"

# Small enough for CI (2 cores), large enough to hit every documented status of every operation.
MAX_EXAMPLES = 50
# Operations that run code are slow and rate-limited: fewer examples.
SLOW_EXAMPLES = 5


def _examples(label: str) -> int:
    return SLOW_EXAMPLES if "execute" in label else MAX_EXAMPLES


def test_committed_document_matches_the_code():
    generated = build_document(operations())
    assert COMMITTED.exists(), f"docs/openapi.yaml is missing; create it with `{REGENERATE}`"
    committed = yaml.safe_load(COMMITTED.read_text())
    assert committed == generated, (
        f"docs/openapi.yaml is out of date with the route table and models; regenerate it with `{REGENERATE}`"
    )
    assert COMMITTED.read_text() == to_yaml(generated), f"docs/openapi.yaml is not formatted as generated; `{REGENERATE}`"


def test_document_covers_every_route_and_error(server):
    doc = httpx.get(server.base_url + "/openapi.json").json()
    assert doc == build_document(operations())  # the served document is the committed one
    assert doc["openapi"] == "3.1.0"
    for op in operations():
        entry = doc["paths"][op.path][op.method.lower()]
        statuses = set(entry["responses"])
        assert {str(s) for s in op.responses} <= statuses
        if op.security == "session":
            assert {"401", "403", "404"} <= statuses
            assert entry["security"] == [{"sessionToken": []}]
        if op.request is not None:
            assert {"400", "413", "422"} <= statuses
    # every error response uses the Error model
    for name, response in doc["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, name


def test_schema_is_valid_openapi_3_1(server):
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
    labels = {op.ok().label for op in schema.get_all_operations()}
    # (schemathesis leaves out the operation that serves the schema itself)
    assert labels == {f"{op.method} {op.path}" for op in operations() if op.path != "/openapi.json"}


# -- schemathesis against the live server ----------------------------------------------------------
#
# schemathesis' own pytest integration (`schemathesis.pytest.from_fixture`) reads pytest internals
# that pytest 9 no longer has, so the cases come from its Python API instead: one Hypothesis
# strategy per operation and generation mode (`APIOperation.as_strategy`), each case sent and
# checked with `case.call_and_validate()` (every built-in check: no 5xx, documented status, content
# type, headers and response schema, negative data rejected, positive data accepted).

OPERATIONS = [f"{op.method} {op.path}" for op in operations() if op.path != "/openapi.json"]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


@pytest.fixture(scope="module")
def st_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Run on, so the execution endpoints are exercised for real (not answered 503)
    srv = ServerProcess(tmp_path_factory.mktemp("schemathesis") / "data",
                        ["--run-rate", "1000", "--run-burst", "1000"], env={"CRDT_SERVER_EXECUTION": "on"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def st_schema(st_server: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(st_server.base_url + "/openapi.json")


@pytest.fixture(scope="module")
def st_http(st_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=st_server.base_url, timeout=10) as client:
        yield client


def _operation(schema: Any, label: str) -> Any:
    method, path = label.split(" ", 1)
    return schema[path][method].ok() if hasattr(schema[path][method], "ok") else schema[path][method]


def _fresh_session(http: httpx.Client) -> dict[str, Any]:
    r = http.post("/api/sessions", json={"title": "st", "code": "print(1)\n"})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _excluded(label: str) -> list[Any]:
    """Which languages run depends on the host's toolchains (GET /api/languages), so a well-formed
    language name may fairly be answered 422 unknown_language: no positive-acceptance check there.
    Playback's "exactly one of at and seq", "seq within the log" and "to_seq not below from_seq" are
    more than a static schema can say, so the same holds there.
    Every other check (no 5xx, responses match the schema, ...) still runs."""
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    return [positive_data_acceptance] if label in _NO_POSITIVE_ACCEPTANCE else []


_NO_POSITIVE_ACCEPTANCE = ("POST /api/execute", "GET /api/sessions/{session_id}/playback",
                           "GET /api/sessions/{session_id}/playback/updates")


def _run(operation: Any, mode: Any, call: Any) -> None:
    if mode == schemathesis.GenerationMode.NEGATIVE and operation.label in ("GET /health", "GET /metrics", "GET /api/languages"):
        return  # no parameters, no body: nothing to make invalid
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=_examples(operation.label), deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        if mode == schemathesis.GenerationMode.POSITIVE and isinstance(case.body, dict) and "expiresAt" in case.body:
            case.body["expiresAt"] = time.time() + 3600  # "in the future" is more than a static schema can say
        call(case)

    check()


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("label", OPERATIONS)
def test_api_conforms_with_interviewer_token(st_schema, st_http, label, mode):
    """Each case runs against a session of its own (so DELETE and PATCH status cannot starve the others)."""

    def call(case: Any) -> None:
        s = _fresh_session(st_http)
        generated = (case.path_parameters or {}).get("session_id")
        if isinstance(generated, str) and SESSION_ID.match(generated):  # a valid id: make it a real one
            case.path_parameters["session_id"] = s["id"]
        case.call_and_validate(headers={"Authorization": f"Bearer {s['tokens']['interviewer']}"}, excluded_checks=_excluded(label))

    _run(_operation(st_schema, label), mode, call)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("label", OPERATIONS)
def test_api_conforms_without_token(st_schema, label, mode):
    _run(_operation(st_schema, label), mode, lambda case: case.call_and_validate(excluded_checks=_excluded(label)))
