"""Server endpoints: the health check and the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import __version__
from ..web import editor_status
from .context import ctx
from .errors import model_response
from .models import Health


async def health(request: Request) -> Response:
    service = ctx(request).service
    db_ok = await service.store.ping()
    execution = service.execution
    body = Health(
        status="ok" if db_ok else "degraded",
        version=__version__,
        database="ok" if db_ok else "error",
        sandbox=execution.mode if execution is not None else "unavailable",
        editor=editor_status(request),
    )
    return model_response(body, 200 if db_ok else 503)


async def openapi_json(request: Request) -> Response:
    """The document ``create_app`` generated from the route table (``api/openapi.py``)."""
    return JSONResponse(request.app.state.openapi)
