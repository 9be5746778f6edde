"""Origin policy shared by CORS and the WebSocket Origin check: same origin, or a listed one."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from ..config import Settings


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
