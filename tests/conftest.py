"""Shared fixtures: the real server in a subprocess (``crdt_server.testing.ServerProcess``), stores and clients.

The server and store fixtures take a ``backend``: SQLite, unless the test module sets
``BACKENDS`` (imported from ``tests/pg.py``), which runs each of its tests on SQLite and on
PostgreSQL (a schema of its own per server or store); one test opts in with
``@pytest.mark.backends(*BACKENDS)``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from pycrdt import Doc, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket

from crdt_server.lifetimes import Lifetimes
from crdt_server.storage import PostgresStore, SQLiteStore
from crdt_server.testing import ServerProcess, free_port

from .pg import URL, database_for, new_schema, require_postgres

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")  # one test's own choice
        names = marker.args if marker else getattr(metafunc.module, "BACKENDS", ("sqlite",))
        if tuple(names) != ("sqlite",):  # SQLite alone needs no parameter (test ids stay as they were)
            metafunc.parametrize("backend", names, indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """Which store the servers and stores of this test use: ``sqlite`` or ``postgresql``."""
    name: str = getattr(request, "param", "sqlite")
    if name == "postgresql":
        require_postgres()
    return name


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[ServerProcess]:
    with database_for(backend) as database:
        yield from running(ServerProcess(tmp_path_factory.mktemp("srv") / "data", database=database))


@pytest.fixture
def fresh_server(tmp_path: Path, backend: str) -> Iterator[ServerProcess]:
    """A server of its own, for tests that kill or restart it."""
    with database_for(backend) as database:
        srv = ServerProcess(tmp_path / "data", database=database)
        srv.start()
        yield srv
        if srv.proc and srv.proc.poll() is None:
            srv.stop()


@pytest.fixture
def make_store(tmp_path: Path, backend: str) -> Iterator[Any]:
    """``make_store(**options)``: a new (unopened) store of the test's backend, every one on the same
    database, so a store opened after another one closed finds its data."""
    with new_schema() if backend == "postgresql" else nullcontext("") as schema:

        def make(*, lifetimes: Lifetimes | None = None, **options: Any) -> SQLiteStore | PostgresStore:
            if backend == "postgresql":
                return PostgresStore(URL, schema=schema, lifetimes=lifetimes, **options)
            return SQLiteStore(tmp_path / "db.sqlite", lifetimes=lifetimes, **options)

        yield make


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
def make_server(tmp_path: Path, backend: str) -> Iterator[Any]:
    """Start servers with extra flags and env vars (each on its own database); all of them are stopped
    at the end of the test."""
    started: list[ServerProcess] = []
    with ExitStack() as databases:

        def make(*args: str, **env: str) -> ServerProcess:
            database = databases.enter_context(database_for(backend))
            srv = ServerProcess(tmp_path / f"data{len(started)}", extra_args=list(args), env=env, database=database)
            started.append(srv)
            srv.start()
            return srv

        try:
            yield make
        finally:
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
