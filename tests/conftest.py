"""Shared fixtures: the real server in a subprocess (``crdt_server.testing.ServerProcess``) and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from pycrdt import Doc, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket

from crdt_server.testing import ServerProcess, free_port

__all__ = [
    "ROOT", "ServerProcess", "auth", "create_session", "expect_refusal", "free_port", "new_session", "py_client",
    "running", "text_of", "wait_for",
]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def running(srv: Any) -> Iterator[Any]:
    """For fixtures: start ``srv`` (anything with ``start``/``stop``), yield it, stop it."""
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from running(ServerProcess(tmp_path_factory.mktemp("srv") / "data"))


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own, for tests that kill or restart it."""
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()


def new_session(http: httpx.Client, **body: Any) -> dict[str, Any]:
    """``POST /api/sessions`` with ``body``; the created session (with its tokens). Fails unless 201."""
    r = http.post("/api/sessions", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def create_session(server: ServerProcess, **body: Any) -> dict[str, Any]:
    """``new_session`` for async tests: its own client, in a worker thread (the event loop keeps running)."""
    def create() -> dict[str, Any]:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            return new_session(http, **body)

    return await anyio.to_thread.run_sync(create)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def py_client(server: ServerProcess, session: dict[str, Any], role: str = "candidate") -> AsyncIterator[Doc]:
    """A pycrdt client (pycrdt.Provider over httpx-ws), synced on entry."""
    doc: Doc = Doc()
    url = f"{server.ws_url}/{session['id']}?token={session['tokens'][role]}"
    async with aconnect_ws(url) as ws:
        async with Provider(doc, HttpxWebsocket(ws, session["id"])) as provider:
            with anyio.fail_after(10):
                await provider.synced.wait()
            yield doc


def text_of(doc: Doc) -> str:
    return str(doc.get("code", type=Text))


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(interval)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    """Start servers with extra flags and env vars; all of them are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def make(*args: str, **env: str) -> ServerProcess:
        srv = ServerProcess(tmp_path / f"data{len(started)}", extra_args=list(args), env=env)
        started.append(srv)
        srv.start()
        return srv

    yield make
    for srv in started:
        srv.stop()


async def expect_refusal(url: str) -> tuple[int, str, list[bytes]]:
    """Connect to a WebSocket the server must close: its close code, reason and whatever arrived first."""
    received: list[bytes] = []
    async with aconnect_ws(url) as ws:
        try:
            with anyio.fail_after(5):
                while True:
                    received.append(await ws.receive_bytes())
        except WebSocketDisconnect as exc:
            return exc.code, exc.reason, received
    raise AssertionError("not closed")
