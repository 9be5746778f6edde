"""JSON answers: models as camelCase JSON, and every error as ``{"error": {"code", "message"}}``.

Errors the service raises (no such session, ended session, refused runs) are mapped to HTTP here,
once, so handlers never translate them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from ..execution import ExecutionError, RateLimited
from ..limits import retry_after_header
from ..service import RunDisabled, SessionEnded, SessionLocked
from ..storage import DocumentTooLarge, SessionNotFound, StorageQuotaExceeded, StorageUnavailable

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_field",
    429: "rate_limited",
}


class ApiJSONResponse(JSONResponse):
    """JSON rendered ASCII-only: strings that came from clients (awareness names, cursors, echoed
    field names) may hold unpaired surrogates, which cannot be encoded as UTF-8 but can be escaped."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def model_response(model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> ApiJSONResponse:
    """A pydantic model as the JSON body (camelCase, ASCII-safe)."""
    return ApiJSONResponse(model.model_dump(mode="json", by_alias=True), status_code=status,
                           headers=dict(headers) if headers else None)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return ApiJSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


SESSION_NOT_FOUND = "No session with this id (it may have expired or been deleted)."
SESSION_ENDED = "The session has ended and is read-only; the interviewer's PATCH with status 'active' reopens it."


async def session_not_found_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "session_not_found", SESSION_NOT_FOUND)


async def session_ended_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, "session_ended", SESSION_ENDED)


async def session_locked_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, "session_locked", "The interviewer has locked the editor; the candidate cannot change "
                                                 "the code until it is unlocked.")


async def run_disabled_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(403, "run_disabled", "The interviewer has switched Run off for the candidate.")


async def document_too_large_handler(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, StorageQuotaExceeded):
        return error_response(413, "storage_quota_exceeded",
                              "This session has used its storage quota (--session-storage-quota); it takes no more edits.")
    return error_response(413, "document_too_large",
                          "The document would exceed the server's --max-document-size; the change was not applied.")


def _where(conn: HTTPConnection) -> str:
    """``GET /path``, or ``WebSocket /path``: the same handlers serve sockets (``app.py``), which have no method."""
    return f"{conn.scope.get('method', 'WebSocket')} {conn.url.path}"


async def storage_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """Disk full, I/O error, locked database: the real cause goes to the log, the client may retry."""
    log.error("storage failure on %s: %s", _where(request), exc.__cause__ or exc)
    return error_response(503, "storage_unavailable", "The server cannot reach its storage right now; retry later.",
                          {"Retry-After": "5"})


_RUN_REFUSALS: dict[str, tuple[int, str]] = {
    "unknown_language": (422, "{exc}; see GET /api/languages."),
    "invalid_field": (422, "{exc}"),
    "queue_full": (429, "Every worker is busy and the queue is full; retry shortly."),
    "run_in_progress": (429, "This session already has a run in progress."),
    "rate_limited": (429, "Too many runs; retry later."),
    "execution_unavailable": (503, "Code execution is not available on this server."),
}


async def execution_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ExecutionError)
    status, message = _RUN_REFUSALS.get(exc.code, (500, "The sandbox failed to run this program."))
    headers = None
    if status == 429:
        headers = {"Retry-After": retry_after_header(exc.retry_after if isinstance(exc, RateLimited) else 1.0)}
    if status == 500:
        log.error("sandbox failure on %s", _where(request), exc_info=exc)
    return error_response(status, exc.code if status != 500 else "sandbox_error", message.format(exc=exc), headers)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else code.replace("_", " ")
    if exc.status_code == 404:
        message = "No such endpoint."
    elif exc.status_code == 405:
        message = "This method is not allowed on this endpoint."
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None))


async def internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s", _where(request), exc_info=exc)
    return error_response(500, "internal_error", "The server failed to handle this request.")


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    ApiError: api_error_handler,
    SessionNotFound: session_not_found_handler,
    SessionEnded: session_ended_handler,
    SessionLocked: session_locked_handler,
    RunDisabled: run_disabled_handler,
    DocumentTooLarge: document_too_large_handler,
    StorageUnavailable: storage_unavailable_handler,
    sqlite3.Error: storage_unavailable_handler,
    ExecutionError: execution_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}


def websocket_handler(exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    """The handler Starlette's ExceptionMiddleware would call for ``exc`` raised by a WebSocket endpoint:
    the most specific one, never the one for ``Exception`` (an HTTP 500 page; Starlette's
    ServerErrorMiddleware leaves a WebSocket's error to the server, which closes it 1011)."""
    return next((EXCEPTION_HANDLERS[c] for c in type(exc).__mro__ if c in EXCEPTION_HANDLERS and c is not Exception),
                None)
