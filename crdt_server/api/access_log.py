"""One log line per HTTP request: method, path (never the query string: it can carry a token),
status, duration, session id and client address. Pure ASGI, so streaming bodies and the
WebSocket route pass through untouched (WebSockets log their own open/close lines).
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..logs import log_request

_SESSION_PATH = re.compile(r"^/(?:api/|ws/)?sessions/([A-Za-z0-9_-]{1,64})(?:/|$)")


def session_of(path: str) -> str | None:
    match = _SESSION_PATH.match(path)
    return match.group(1) if match else None


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            status = status or 500
            raise
        finally:
            path: str = scope.get("path", "")
            client: Any = scope.get("client")
            log_request(scope.get("method", "?"), path, status, (time.perf_counter() - start) * 1000,
                        session_of(path), client[0] if client else None)
