"""The Starlette application: wiring (store, rooms, service, Run) and the lifespan that owns them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Match, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from uvicorn.protocols.utils import ClientDisconnected

from .api import openapi
from .api.access_log import AccessLogMiddleware
from .api.context import AppContext
from .api.errors import EXCEPTION_HANDLERS, websocket_handler
from .api.origins import ApiCORSMiddleware, cors_options
from .api.routes import routes
from .cluster import Cluster
from .config import Settings
from .execution import ExecutionService, ExecutionSettings
from .lifetimes import Lifetimes
from .limits import TokenBuckets
from .metrics import Metrics
from .service import SessionService
from .storage import PostgresStore, SQLiteStore, open_store
from .storage.files import DataDirInUse, hold_database
from .storage.pg_instance import InstanceLock
from .storage.schema import StorageCorrupted
from .sync import RoomOptions, SessionServer
from .tokens import TokenSigner, resolve_secret
from .web import EditorPage, web_routes

log = logging.getLogger(__name__)


async def sweep_expired(service: SessionService, interval: float) -> None:
    """Delete sessions past their ``expiresAt`` (inactive, or ended and past retention), every ``interval`` s."""
    while True:
        await anyio.sleep(interval)
        try:
            if await service.expire():
                log.info("expired sessions deleted")
        except Exception:
            log.exception("expiry sweep failed")


def watch_gauges(metrics: Metrics, service: SessionService) -> None:
    """The gauges are read off the live objects at scrape time (in the event loop, like every change)."""
    metrics.watch(
        connections=lambda: sum(len(room.clients) for room in service.rooms.rooms.values()),
        rooms_loaded=lambda: len(service.rooms.rooms),
        run_queue_depth=lambda: service.execution.queue_depth if service.execution is not None else 0,
    )


class App(Starlette):
    """Starlette, except that a WebSocket goes straight to its endpoint.

    The HTTP middleware (access log, CORS) and the router's wrappers pass a WebSocket scope through
    untouched, but each is a coroutine frame held for the socket's whole life: about 2.7 KB per open
    socket (bench/RESULTS.md, "Profile"). An exception is handed to the same handlers Starlette
    would call for a WebSocket (whose answer it ignores, as Starlette does)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return await super().__call__(scope, receive, send)
        scope["app"] = self
        for route in self.router.routes:
            if isinstance(route, WebSocketRoute):
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    websocket = WebSocket(scope, receive, send)
                    try:
                        await route.endpoint(websocket)
                    except ClientDisconnected:  # gone while its handler sent (e.g. before the accept): a disconnect
                        log.debug("WebSocket client on %s went away", scope.get("path"))
                    except Exception as exc:
                        handler = websocket_handler(exc)
                        if handler is None:
                            raise
                        await handler(websocket, exc)  # type: ignore[arg-type]
                    return None
        return await super().__call__(scope, receive, send)


def create_app(settings: Settings, instance: InstanceLock | None = None) -> Starlette:
    """``instance``: the PostgreSQL instance lock ``crdt-server`` took before starting (reported by /health)."""
    metrics = Metrics()  # this app's own registry (see crdt_server/metrics.py)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        """Refuse to serve a database another live server holds, a damaged one, or a bad secret file:
        one line naming the cause, then the server exits."""
        try:
            with hold_database(settings.sqlite_path):  # held until the process ends
                async with serving(app):
                    yield
        except (DataDirInUse, StorageCorrupted, ValueError) as exc:
            log.error("crdt-server: %s", exc)
            raise

    @asynccontextmanager
    async def serving(app: Starlette) -> AsyncIterator[None]:
        store = open_store(settings)
        async with store:
            if isinstance(store, PostgresStore):
                store.instance = instance
            secret = await resolve_secret(settings.secret, settings.data_dir, store)
            async with running(app, store, secret):
                yield
        log.info("shut down cleanly")

    @asynccontextmanager
    async def running(app: Starlette, store: SQLiteStore | PostgresStore, secret: str) -> AsyncIterator[None]:
        rooms = SessionServer(store, RoomOptions.from_settings(settings), metrics)
        lifetimes = Lifetimes.from_settings(settings)
        if settings.token_ttl < settings.session_max_lifetime + settings.ended_retention:
            log.warning("--token-ttl is shorter than --session-max-lifetime + --ended-retention: tokens of long-lived "
                        "sessions expire before their session does (re-issue them: POST /api/sessions/{id}/tokens)")
        store.observe_commit = metrics.commit_seconds.observe  # thread-safe: called by the SQLite writer thread
        service = SessionService(store, rooms, lifetimes=lifetimes, metrics=metrics,
                                 max_participant_events=settings.max_participant_events)
        watch_gauges(metrics, service)
        cluster = None
        if settings.redis_url:  # several processes (``crdt-server`` checked at start that Redis answers)
            cluster = Cluster(settings, secret, service, instance)
            rooms.peers = cluster
        app.state.ctx = AppContext(
            settings=settings,
            service=service,
            signer=TokenSigner(secret, settings.token_ttl, settings.token_cache_entries),
            create_limit=TokenBuckets(settings.create_rate, settings.create_burst),
            connect_limit=TokenBuckets(settings.connect_rate, settings.connect_burst),
            run_limit=TokenBuckets(settings.run_rate, settings.run_burst),
        )
        app.state.editor = editor = EditorPage(settings)  # the interview page; built in the background
        async with rooms, AsyncExitStack() as stack, anyio.create_task_group() as tg:
            if settings.execution == "on":
                # Probes the host once (namespaces, cgroups, toolchains); with --sandbox-require
                # above what works here, this raises and the server refuses to start.
                service.execution = await stack.enter_async_context(
                    ExecutionService(ExecutionSettings.from_settings(settings))
                )
            metrics.sandbox_started(service.execution.mode if service.execution else "off", service.execution)
            shortest = min(settings.session_ttl, settings.ended_retention)
            tg.start_soon(sweep_expired, service, min(60.0, max(1.0, shortest / 10)))
            tg.start_soon(editor.run)
            if cluster is not None:
                tg.start_soon(cluster.run)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                await rooms.close_all_rooms()  # flush every room before the store closes

    middleware = [
        Middleware(AccessLogMiddleware),  # outermost: refused requests are logged too
        Middleware(ApiCORSMiddleware, **cors_options(settings)),
    ]
    app = App(routes=routes(web_routes()), middleware=middleware, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.openapi = openapi.document()
    return app
