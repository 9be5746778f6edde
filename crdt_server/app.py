"""The Starlette application: routes, middleware, and the lifespan that owns store and rooms."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from . import __version__
from .api import sessions as rest
from .api.context import AppContext, ctx
from .api.errors import EXCEPTION_HANDLERS
from .api.models import Health
from .api.origins import allowed_origins
from .api.websocket import session_socket
from .config import Settings
from .limits import TokenBuckets
from .storage import open_store
from .sync import SessionServer
from .tokens import TokenSigner, load_secret

log = logging.getLogger(__name__)


async def health(request: Request) -> Response:
    c = ctx(request)
    db_ok = await c.store.ping()
    execution = c.extras.get("execution")
    body = Health(
        status="ok" if db_ok else "degraded",
        version=__version__,
        database="ok" if db_ok else "error",
        sandbox=execution.mode if execution is not None else "unavailable",
    )
    return JSONResponse(body.model_dump(by_alias=True), status_code=200 if db_ok else 503)


async def sweep_expired(c: AppContext, interval: float) -> None:
    """Delete sessions inactive past their TTL; sessions with live sockets are kept alive."""
    while True:
        await anyio.sleep(interval)
        try:
            now = time.time()
            for sid in await c.store.expired_sessions(now):
                room = c.server.rooms.get(sid)
                if room is not None and room.clients:
                    await c.store.update_session(sid, updated_at=now, expires_at=now + c.settings.session_ttl)
                    continue
                await c.server.drop(sid, 4410, "session expired")
                await c.store.delete_session(sid)
                log.info("session expired and deleted")
        except Exception:
            log.exception("expiry sweep failed")


def routes() -> list:
    return [
        Route("/health", health, methods=["GET"]),
        Route("/api/sessions", rest.create_session, methods=["POST"]),
        Route("/api/sessions/{session_id}", rest.get_session, methods=["GET"]),
        Route("/api/sessions/{session_id}", rest.patch_session, methods=["PATCH"]),
        Route("/api/sessions/{session_id}", rest.delete_session, methods=["DELETE"]),
        Route("/api/sessions/{session_id}/code", rest.get_code, methods=["GET"]),
        Route("/api/sessions/{session_id}/code", rest.save_code, methods=["POST"]),
        Route("/api/sessions/{session_id}/participants", rest.participants, methods=["GET"]),
        Route("/api/sessions/{session_id}/history", rest.history, methods=["GET"]),
        WebSocketRoute("/ws/sessions/{session_id}", session_socket),
    ]


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        secret = load_secret(settings.secret, settings.data_dir)
        store = open_store(settings)
        server = SessionServer(store, grace=settings.room_grace, snapshot_every=settings.snapshot_every,
                               persist=settings.persistence == "write-ahead")
        c = AppContext(
            settings=settings,
            store=store,
            server=server,
            signer=TokenSigner(secret, settings.token_ttl),
            create_limit=TokenBuckets(settings.create_rate, settings.create_burst),
            connect_limit=TokenBuckets(settings.connect_rate, settings.connect_burst),
        )
        app.state.ctx = c
        async with store, server, anyio.create_task_group() as tg:
            tg.start_soon(sweep_expired, c, min(60.0, max(1.0, settings.session_ttl / 10)))
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                await server.close_all_rooms()  # flush every room before the store closes
        log.info("shut down cleanly")

    origins = allowed_origins(settings)
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    ]
    return Starlette(routes=routes(), middleware=middleware, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
