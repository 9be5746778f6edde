"""Server endpoints: the health check, the Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import __version__
from ..metrics import CONTENT_TYPE
from ..web import editor_status
from .auth import bearer
from .context import ctx
from .errors import ApiError, model_response
from .models import Health


async def health(request: Request) -> Response:
    service = ctx(request).service
    db_ok = await service.store.ping()
    bus = service.rooms.peers.state
    execution = service.execution
    ok = db_ok and bus != "down"
    body = Health(
        status="ok" if ok else "degraded",
        version=__version__,
        database="ok" if db_ok else "error",
        bus=bus,
        sandbox=execution.mode if execution is not None else "unavailable",
        editor=editor_status(request),
    )
    return model_response(body, 200 if ok else 503)


async def metrics(request: Request) -> Response:
    """The Prometheus text exposition of this app's registry; with --metrics-token, only for its bearer."""
    c = ctx(request)
    token = c.settings.metrics_token
    if token:
        given = bearer(request)
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "unauthorized", "This server requires 'Authorization: Bearer <metrics token>'.")
    return Response(c.service.metrics.exposition(), media_type=CONTENT_TYPE)


async def openapi_json(request: Request) -> Response:
    """The document ``create_app`` generated from the route table (``api/openapi.py``)."""
    return JSONResponse(request.app.state.openapi)
