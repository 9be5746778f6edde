"""Origin policy shared by CORS and the WebSocket Origin check: same origin, or a listed one."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import Response

from ..config import Settings
from .errors import error_response


def allowed_origins(settings: Settings) -> list[str]:
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


def origin_allowed(conn: HTTPConnection, settings: Settings) -> bool:
    """Browsers always send Origin on WebSocket upgrades; other clients (CLI, tests) may not."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    origin = origin.rstrip("/")
    host = conn.headers.get("host", "")
    if origin in (f"http://{host}", f"https://{host}"):
        return True
    listed = allowed_origins(settings)
    return "*" in listed or origin in listed


def cors_options(settings: Settings) -> dict[str, Any]:
    return {
        "allow_origins": allowed_origins(settings),
        "allow_methods": ["GET", "POST", "PATCH", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type"],
        "expose_headers": ["Retry-After", "Location"],
        "max_age": 600,
    }


class ApiCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, with a refused preflight answered by the usual JSON error body."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("latin-1")
        headers = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        return error_response(403, "cors_refused", f"{reason}: this origin, method or header is not allowed.",
                              headers)
