"""Run code: GET /api/languages, POST /api/execute, POST /api/sessions/{id}/execute.

A session run takes a snapshot of the live Y.Text and the session language at the moment of
the request, runs it in the sandbox without blocking the event loop, then appends the result to
the document's ``runs`` array (so every editor sees it live) and to the history.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import sessions as ops
from ..execution import (
    ExecutionService,
    InvalidRequest,
    QueueFull,
    RateLimited,
    RunResult,
    SandboxUnavailable,
    SessionBusy,
    UnknownLanguage,
)
from ..storage import EventRecord
from .auth import authorize_session, require_api_key
from .body import read_model
from .context import AppContext, client_ip, ctx
from .errors import ApiError
from .models import LANGUAGE_PATTERN, Model
from .sessions import WRITERS, live_room, session_view


class ExecuteRequest(Model):
    code: str
    language: str = Field(pattern=LANGUAGE_PATTERN)
    timeout: float | None = Field(None, gt=0, le=3600, description="Seconds; default 5, at most the server's maximum (10)")
    stdin: str = ""


class SessionExecuteRequest(Model):
    timeout: float | None = Field(None, gt=0, le=3600)
    stdin: str = ""


class ExecutionResult(Model):
    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    truncated: bool
    duration_ms: int
    language: str
    sandbox: str = Field(description="'full' or 'degraded': how isolated this run was")
    compile_error: bool = False
    compile_output: str = Field("", description="Compiler messages, for compiled languages")
    oom_killed: bool = False
    run_id: str | None = None


class Language(Model):
    name: str
    version: str
    aliases: list[str]
    compiled: bool


class Languages(Model):
    languages: list[Language]
    sandbox: str


def service(c: AppContext) -> ExecutionService:
    svc = c.execution
    if svc is None or svc.mode == "unavailable":
        raise ApiError(503, "execution_unavailable", "Code execution is not available on this server.")
    return svc


def _result(r: RunResult, run_id: str | None = None) -> ExecutionResult:
    return ExecutionResult.model_validate({**r.as_json(), "runId": run_id})


async def _run(svc: ExecutionService, **kwargs: Any) -> RunResult:
    """Map the execution errors to HTTP answers."""
    try:
        return await svc.run(**kwargs)
    except UnknownLanguage as exc:
        raise ApiError(422, "unknown_language", f"{exc}; see GET /api/languages.") from None
    except InvalidRequest as exc:
        raise ApiError(422, "invalid_field", str(exc)) from None
    except QueueFull:
        raise ApiError(429, "queue_full", "Every worker is busy and the queue is full; retry shortly.", {"Retry-After": "1"}) from None
    except SessionBusy:
        raise ApiError(429, "run_in_progress", "This session already has a run in progress.", {"Retry-After": "1"}) from None
    except RateLimited as exc:
        raise ApiError(429, "rate_limited", "Too many runs; retry later.", {"Retry-After": str(max(1, round(exc.retry_after)))}) from None
    except SandboxUnavailable:
        raise ApiError(503, "execution_unavailable", "Code execution is not available on this server.") from None


def _json(model: Model) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", by_alias=True))


async def languages(request: Request) -> Response:
    svc = service(ctx(request))
    return _json(Languages(languages=[Language(**lang.as_json()) for lang in svc.languages()], sandbox=svc.mode))


async def execute(request: Request) -> Response:
    """Run code given in the body (no session)."""
    require_api_key(request)
    c = ctx(request)
    svc = service(c)
    retry = c.run_limit.take(client_ip(request))
    if retry:
        raise ApiError(429, "rate_limited", "Too many runs from this address; retry later.", {"Retry-After": str(max(1, round(retry)))})
    body = await read_model(request, ExecuteRequest)
    result = await _run(svc, language=body.language, code=body.code, stdin=body.stdin, timeout=body.timeout)
    return _json(_result(result))


async def session_execute(request: Request) -> Response:
    """Run a snapshot of the session's live text; the result goes into the document's ``runs``."""
    sid, claims = authorize_session(request, WRITERS)
    c = ctx(request)
    svc = service(c)
    body = await read_model(request, SessionExecuteRequest, allow_empty=True)
    record, code = await session_view(c, sid)  # the snapshot: live text and language, now
    if record.status == "ended":
        raise ApiError(409, "session_ended", "The session has ended; Run is disabled.")
    language = record.language
    run_id = secrets.token_hex(8)
    digest = hashlib.sha256(code.encode("utf-8")).hexdigest()
    started = time.time()
    await c.store.append_events([EventRecord(sid, "run_started", {"runId": run_id, "by": claims.role, "language": language, "sha256": digest}, ts=started)])
    try:
        result = await _run(svc, language=language, code=code, stdin=body.stdin, timeout=body.timeout, session_key=sid)
    except ApiError as exc:
        await c.store.append_events([EventRecord(sid, "run_refused", {"runId": run_id, "reason": exc.code})])
        raise
    entry = {
        "id": run_id, "by": claims.role, "language": result.language, "startedAt": started,
        "durationMs": result.duration_ms, "exitCode": result.exit_code, "stdout": result.stdout,
        "stderr": result.stderr, "timedOut": result.timed_out, "truncated": result.truncated,
        "sandbox": result.sandbox,
    }
    async with live_room(c, sid) as room:  # 404 if the session was deleted while running
        await ops.submit_changes(room, run=entry)
    await c.store.append_events([EventRecord(sid, "run_finished", {
        "runId": run_id, "exitCode": result.exit_code, "durationMs": result.duration_ms,
        "timedOut": result.timed_out, "sha256": digest,
    })])
    return _json(_result(result, run_id))
