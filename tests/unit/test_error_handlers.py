"""The API's exception handlers also serve WebSockets (``crdt_server/app.py``), which have no method:
a storage failure on a socket must log its cause, not fail again inside the handler."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from starlette.websockets import WebSocket

from crdt_server.api.errors import websocket_handler
from crdt_server.storage import StorageUnavailable

pytestmark = pytest.mark.anyio


async def _never() -> dict[str, object]:
    raise AssertionError("the handler must not read from the socket")


async def _refuse(message: dict[str, object]) -> None:
    raise AssertionError("the handler must not write to the socket")


@pytest.mark.parametrize("exc", [StorageUnavailable("disk full"), sqlite3.OperationalError("disk I/O error")])
async def test_a_storage_failure_on_a_websocket_is_logged_with_its_cause(exc, caplog):
    scope = {"type": "websocket", "path": "/ws/sessions/abc", "headers": [], "query_string": b"",
             "server": ("127.0.0.1", 8000), "scheme": "ws"}
    handler = websocket_handler(exc)  # the one the app calls for a WebSocket endpoint's exception
    assert handler is not None
    with caplog.at_level(logging.ERROR):
        await handler(WebSocket(scope, _never, _refuse), exc)  # type: ignore[arg-type]
    assert f"storage failure on WebSocket /ws/sessions/abc: {exc}" in caplog.text
