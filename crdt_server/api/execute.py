"""Run code: GET /api/languages, POST /api/execute, POST /api/sessions/{id}/execute.

Handlers authorise and parse; the service runs (a session run snapshots the live text and writes
the result into the document's ``runs``). Refusals of the execution package become HTTP answers
in ``api/errors.py``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..domain import WRITERS
from ..execution import RunResult
from ..languages import LANGUAGES
from ..limits import retry_after_header
from .auth import authorize, require_api_key
from .body import read_model
from .context import client_ip, ctx
from .errors import ApiError, model_response
from .models import ExecuteRequest, ExecutionResult, Language, Languages, SessionExecuteRequest


def _result(r: RunResult, run_id: str | None = None) -> ExecutionResult:
    return ExecutionResult.model_validate({**r.as_json(), "runId": run_id})


async def languages(request: Request) -> Response:
    """The whole registry, each marked runnable here or not; with Run off or unavailable, none is."""
    execution = ctx(request).service.execution
    mode = execution.mode if execution is not None else "unavailable"
    runnable = {lang.name: lang for lang in execution.languages()} if execution is not None and mode != "unavailable" else {}
    items = []
    for name, aliases in LANGUAGES.items():
        info = runnable.get(name)
        items.append(Language(name=name, aliases=list(aliases), runnable=info is not None,
                              version=info.version if info else None, compiled=info.compiled if info else None))
    return model_response(Languages(languages=items, sandbox=mode))


async def execute(request: Request) -> Response:
    """Run code given in the body (no session)."""
    trusted = require_api_key(request)
    c = ctx(request)
    c.service.runner()  # 503 before anything else when Run is unavailable
    retry = 0.0 if trusted else c.run_limit.take(client_ip(request))
    if retry:
        c.service.metrics.run_rate_limited()
        raise ApiError(429, "rate_limited", "Too many runs from this address; retry later.",
                       {"Retry-After": retry_after_header(retry)})
    body = await read_model(request, ExecuteRequest)
    result = await c.service.run_code(language=body.language, code=body.code, stdin=body.stdin, timeout=body.timeout)
    return model_response(_result(result))


async def session_execute(request: Request) -> Response:
    """Run a snapshot of the session's live text; the result goes into the document's ``runs``."""
    sid, claims = await authorize(request, WRITERS)
    c = ctx(request)
    c.service.runner()  # 503 before anything else when Run is unavailable
    body = await read_model(request, SessionExecuteRequest, allow_empty=True)
    result, run_id = await c.service.run(sid, claims.role, stdin=body.stdin, timeout=body.timeout)
    return model_response(_result(result, run_id))
