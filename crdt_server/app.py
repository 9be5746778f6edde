"""The Starlette application: routes, middleware, and the lifespan that owns store and rooms."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute

from . import __version__
from .api import execute
from .api import sessions as rest
from .api.access_log import AccessLogMiddleware
from .api.context import AppContext, ctx
from .api.errors import EXCEPTION_HANDLERS
from .api.models import (
    Code,
    CreatedSession,
    CreateSession,
    Health,
    History,
    Participants,
    SaveCode,
    Session,
    UpdateSession,
)
from .api.openapi import RETRY_AFTER, Operation, QueryParam, catch_all, routes_from, serve_openapi
from .api.origins import ApiCORSMiddleware, cors_options
from .api.websocket import session_socket
from .config import Settings
from .execution import ExecutionService, ExecutionSettings
from .limits import TokenBuckets
from .storage import open_store
from .sync import RoomOptions, SessionServer
from .tokens import TokenSigner, load_secret

log = logging.getLogger(__name__)


async def health(request: Request) -> Response:
    c = ctx(request)
    db_ok = await c.store.ping()
    execution = c.execution
    body = Health(
        status="ok" if db_ok else "degraded",
        version=__version__,
        database="ok" if db_ok else "error",
        sandbox=execution.mode if execution is not None else "unavailable",
    )
    return JSONResponse(body.model_dump(by_alias=True), status_code=200 if db_ok else 503)


async def sweep_expired(c: AppContext, interval: float) -> None:
    """Delete sessions inactive (no edit, no REST write) past their TTL; their sockets get 4410."""
    while True:
        await anyio.sleep(interval)
        try:
            now = time.time()
            for sid in await c.store.expired_sessions(now):
                await c.server.drop(sid, 4410, "session expired")
                await c.store.delete_session(sid)
                log.info("session expired and deleted")
        except Exception:
            log.exception("expiry sweep failed")


def execution_settings(s: Settings) -> ExecutionSettings:
    base = ExecutionSettings()
    return ExecutionSettings(
        workers=s.exec_workers or base.workers, queue_size=s.exec_queue_size, default_timeout=s.run_timeout,
        max_timeout=s.run_timeout_max, compile_timeout=s.compile_timeout, output_limit=s.run_output_limit,
        memory_limit_mb=s.run_memory_mb, max_processes=s.run_max_processes, tmp_size_mb=s.run_tmp_mb,
        max_code_bytes=s.max_code_size, session_rate=s.run_rate, session_burst=s.run_burst,
        require=s.sandbox_require, uid_base=s.sandbox_uid_base,
    )


def operations() -> list[Operation]:
    """The REST route table: handlers, roles, models and errors; routes and OpenAPI come from it."""
    session_ops = [
        Operation(
            "POST", "/api/sessions", rest.create_session, "createSession", "Create a session",
            description="Returns the session with one signed token per role and the WebSocket path. "
                        "Needs `Authorization: Bearer <api key>` when the server has an API key.",
            security="api_key", request=CreateSession, request_required=False,
            responses={201: ("Created.", CreatedSession)}, errors=(429,),
            response_headers={
                201: {"Location": {"description": "The new session's URL path.", "schema": {"type": "string"}}},
                429: RETRY_AFTER,
            },
        ),
        Operation(
            "GET", "/api/sessions/{session_id}", rest.get_session, "getSession", "Read a session",
            security="session", roles=rest.ANY_ROLE, responses={200: ("The session.", Session)},
        ),
        Operation(
            "PATCH", "/api/sessions/{session_id}", rest.patch_session, "updateSession", "Change a session",
            description="Title, language and status change in the live document's `meta` map in the same step, so "
                        "connected editors see them at once. `status: ended` makes the session read-only for "
                        "everyone (sockets stay connected, their edits are dropped; REST writes answer 409); "
                        "on an ended session only a change that includes `status: active` is accepted.",
            security="session", roles=rest.INTERVIEWER, request=UpdateSession, request_required=False,
            responses={200: ("The session after the change.", Session)}, errors=(409,),
        ),
        Operation(
            "DELETE", "/api/sessions/{session_id}", rest.delete_session, "deleteSession", "Delete a session",
            description="Removes the document, its update log and its history, and closes every connected socket "
                        "with code 4404. Later requests answer 404.",
            security="session", roles=rest.INTERVIEWER, responses={204: ("Deleted.", None)},
        ),
        Operation(
            "GET", "/api/sessions/{session_id}/code", rest.get_code, "getCode", "Read the code",
            description="The live document's text, as connected editors have it.",
            security="session", roles=rest.ANY_ROLE, responses={200: ("The code.", Code)},
        ),
        Operation(
            "POST", "/api/sessions/{session_id}/code", rest.save_code, "saveCode", "Save code",
            description="Applied to the live document as a minimal edit (common prefix and suffix kept), so "
                        "connected editors keep their cursors and nothing is duplicated. Answers the resulting "
                        "text, which includes edits that editors made concurrently.",
            security="session", roles=rest.WRITERS, request=SaveCode,
            responses={200: ("The code after the change.", Code)}, errors=(409,),
        ),
        Operation(
            "GET", "/api/sessions/{session_id}/participants", rest.participants, "listParticipants",
            "List participants",
            description="One entry per live WebSocket connection, with name, color and cursor from its awareness "
                        "state where present. The server itself is never listed.",
            security="session", roles=rest.ANY_ROLE, responses={200: ("Who is connected now.", Participants)},
        ),
        Operation(
            "GET", "/api/sessions/{session_id}/history", rest.history, "getHistory", "Read the history",
            description="Timestamped events, oldest first: `created`, `participant_joined`, `participant_left`, "
                        "`title_changed`, `language_changed`, `status_changed`, `code_saved`. Paginated: pass "
                        "`nextAfter` as `?after=` until it is null.",
            security="session", roles=rest.INTERVIEWER, responses={200: ("One page of events.", History)},
            query=(
                QueryParam("after", {"type": "integer", "minimum": 0, "maximum": rest.MAX_AFTER, "default": 0},
                           "Return events with `seq` greater than this."),
                QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": rest.HISTORY_MAX_LIMIT,
                                     "default": rest.HISTORY_LIMIT}, "Page size."),
            ),
        ),
    ]
    run_ops = [
        Operation(
            "GET", "/api/languages", execute.languages, "listLanguages", "List runnable languages", tag="execution",
            description="What this host can run, with versions, and the sandbox mode.",
            responses={200: ("Runnable languages.", execute.Languages)}, errors=(503,),
        ),
        Operation(
            "POST", "/api/execute", execute.execute, "execute", "Run code", tag="execution",
            description="Runs the code in the sandbox (timeout default 5 s, at most the server's maximum). "
                        "Needs `Authorization: Bearer <api key>` when the server has an API key.",
            security="api_key", request=execute.ExecuteRequest,
            responses={200: ("The result (also for programs that fail or time out).", execute.ExecutionResult)},
            errors=(429, 503), response_headers={429: RETRY_AFTER},
        ),
        Operation(
            "POST", "/api/sessions/{session_id}/execute", execute.session_execute, "executeSession",
            "Run the session's code", tag="execution",
            description="Runs a snapshot of the live text in the session's language. The result is appended to "
                        "the document's `runs` array (newest last, at most 20), so every editor sees it, and to "
                        "the history (`run_started`, `run_finished` with the snapshot's SHA-256). One run per "
                        "session at a time; runs are rate-limited per session.",
            security="session", roles=rest.WRITERS, request=execute.SessionExecuteRequest, request_required=False,
            responses={200: ("The result.", execute.ExecutionResult)}, errors=(409, 429, 503),
            response_headers={429: RETRY_AFTER},
        ),
    ]
    meta_ops = [
        Operation(
            "GET", "/health", health, "health", "Health check", tag="meta",
            description="503 with `status: degraded` when the database does not answer.",
            responses={200: ("Healthy.", Health), 503: ("The database does not answer.", Health)},
            strict_query=False,
        ),
        Operation(
            "GET", "/openapi.json", serve_openapi, "openapi", "This OpenAPI document", tag="meta",
            description="The same document as `docs/openapi.yaml` in the repository.",
            responses={200: ("The OpenAPI 3.1 document.", None)}, raw_response={"type": "object"},
            strict_query=False,
        ),
    ]
    return [*session_ops, *run_ops, *meta_ops]


def routes() -> list:
    return [
        *routes_from(operations()),
        WebSocketRoute("/ws/sessions/{session_id}", session_socket),
        catch_all(),  # JSON 404 for every other path (and no slash redirects)
    ]


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        secret = load_secret(settings.secret, settings.data_dir)
        store = open_store(settings)
        server = SessionServer(store, RoomOptions(
            grace=settings.room_grace, snapshot_every=settings.snapshot_every,
            persist=settings.persistence == "write-ahead", presence_interval=settings.presence_interval,
            max_pending=settings.room_pending_updates,
        ))
        c = AppContext(
            settings=settings,
            store=store,
            server=server,
            signer=TokenSigner(secret, settings.token_ttl),
            create_limit=TokenBuckets(settings.create_rate, settings.create_burst),
            connect_limit=TokenBuckets(settings.connect_rate, settings.connect_burst),
            run_limit=TokenBuckets(settings.run_rate, settings.run_burst),
        )
        app.state.ctx = c
        async with store, server, AsyncExitStack() as stack, anyio.create_task_group() as tg:
            if settings.execution == "on":
                # Probes the host once (namespaces, cgroups, toolchains); with --sandbox-require
                # above what works here, this raises and the server refuses to start.
                c.execution = await stack.enter_async_context(ExecutionService(execution_settings(settings)))
            tg.start_soon(sweep_expired, c, min(60.0, max(1.0, settings.session_ttl / 10)))
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                await server.close_all_rooms()  # flush every room before the store closes
        log.info("shut down cleanly")

    middleware = [
        Middleware(AccessLogMiddleware),  # outermost: refused requests are logged too
        Middleware(ApiCORSMiddleware, **cors_options(settings)),
    ]
    return Starlette(routes=routes(), middleware=middleware, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
