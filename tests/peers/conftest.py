"""The peer-client suite: the same scenarios against our server and the reference Node server.

Clients nobody on the project wrote, each generation a ``client.mjs`` flavour (tests/js/client.mjs) in a
Node package of this directory, installed on demand from its lock file (``tests/nodepkg.py``):

* ``y-websocket@2`` / ``y-websocket@3``: y-websocket 2.1.0 / 3.1.0 with yjs 13.6 (``yjs13/``);
* ``next``: the next major, ``@y/websocket`` 4.0.0-3 (the published prerelease of the repository's
  4.0 line) with ``@y/y`` 14 and ``@y/protocols`` (``yjs14/``);
* ``y-websocket@1`` (1.5.4) only where 1.x differs (close codes).

Each generation meets the reference server of its Yjs: ``@y/websocket-server`` 0.1.1 (yjs 13, as the
bench runs it) for the Yjs 13 clients, 0.1.5 (yjs 14) for the next major, which lists it as its own test
server. 0.1.5 as npm resolves it today is broken: its ``@y/protocols`` range picks 1.0.6-rc.1, which
imports ``@y/y`` while the server's documents are ``yjs`` 14.0.0-16 objects (every update fails with
``store.getClock is not a function``), so ``yjs14/package.json`` overrides it to 1.0.6-1, the release
that imports ``yjs`` as 0.1.5 was published against.

Differences by design: our server authenticates (a session made over REST, a role token in the URL;
sessions start with empty ``code`` here, as the reference's rooms do), the reference takes any room name.
Every server and package is started or installed once per test session.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import aconnect_ws
from pycrdt import Doc, Provider
from pycrdt.websocket.websocket import HttpxWebsocket
from websockets.asyncio.client import ClientConnection, connect

from bench.servers import reference_server_script
from crdt_server.sync import protocol as p
from crdt_server.testing import ServerProcess, free_port

from ..conftest import auth, create_session, running
from ..jsclient import JSClient
from ..nodepkg import NodePackage, node_executable

PEERS_DIR = Path(__file__).resolve().parent
YJS13 = NodePackage(PEERS_DIR / "yjs13", ("yjs", "y-protocols", "y-websocket", "y-websocket-1", "y-websocket-2",
                                          "ws", "@y/websocket-server"))
YJS14 = NodePackage(PEERS_DIR / "yjs14", ("@y/y", "@y/protocols", "@y/websocket", "ws", "@y/websocket-server"))


@dataclass(frozen=True)
class Generation:
    name: str
    package: NodePackage
    flavour: str  # module in the package that client.mjs imports
    yjs14: bool = False
    final_44xx: bool = False  # stops reconnecting after a 4400-4499 close (only 3.x has `shouldReconnect`)

    @property
    def flavour_path(self) -> Path:
        return self.package.directory / self.flavour


GENERATIONS = {
    g.name: g for g in (
        Generation("y-websocket@1", YJS13, "y-websocket-1.mjs"),
        Generation("y-websocket@2", YJS13, "y-websocket-2.mjs"),
        Generation("y-websocket@3", YJS13, "y-websocket-3.mjs", final_44xx=True),
        Generation("next", YJS14, "y-websocket-4.mjs", yjs14=True),
    )
}
MAIN = ("y-websocket@2", "y-websocket@3", "next")  # what depends on the provider runs with each of these
# what depends only on the Yjs library (text, content, pending structs) with one client of each: 2.x and 3.x
# both run yjs 13.6
YJS_LINES = ("y-websocket@3", "next")
SIDES = ("ours", "reference")


def matrix(gens: tuple[str, ...] = MAIN, *, ours: str | dict[str, str] | None = None,
           reference: str | dict[str, str] | None = None) -> list[Any]:
    """``(side, gen)`` parameters; a reason (for every generation, or per generation) marks that cell
    ``xfail(strict=True)``, so it shows up when a fix makes it pass."""
    params = []
    for side, reasons in (("ours", ours), ("reference", reference)):
        for gen in gens:
            reason = reasons.get(gen) if isinstance(reasons, dict) else reasons
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(side, GENERATIONS[gen], marks=marks, id=f"{side}-{gen}"))
    return params


# ------------------------------------------------------------------------------------------- servers


class ReferenceServer:
    """``@y/websocket-server`` from one of this directory's packages, in memory, on a free loopback port."""

    def __init__(self, package: NodePackage, log_path: Path) -> None:
        self.package = package
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> None:
        self.package.ensure()
        script = reference_server_script(self.package.node_modules / "@y" / "websocket-server")
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("YPERSISTENCE", "CALLBACK_URL")}
        env.update(HOST="127.0.0.1", PORT=str(self.port))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([node_executable(), str(script)], cwd=self.package.directory, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"reference server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"reference server did not answer:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def ours_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One crdt-server for the whole peer suite (tests that restart a server start their own)."""
    yield from running(ServerProcess(tmp_path_factory.mktemp("peers-ours") / "data"))


@pytest.fixture(scope="session")
def reference13(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceServer]:
    yield from running(ReferenceServer(YJS13, tmp_path_factory.mktemp("peers-reference") / "server.log"))


@pytest.fixture(scope="session")
def reference14(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceServer]:
    yield from running(ReferenceServer(YJS14, tmp_path_factory.mktemp("peers-reference") / "server.log"))


# --------------------------------------------------------------------------------------------- rooms


@dataclass
class Room:
    """One shared document on one server: a session of ours, a room name on the reference."""

    side: str
    server_url: str  # a provider's serverUrl
    name: str  # its room name
    tokens: dict[str, str] | None = None  # ours: the role tokens
    base_url: str | None = None  # ours: the REST API

    def token(self, role: str) -> str | None:
        return self.tokens[role] if self.tokens else None

    def url(self, role: str = "interviewer") -> str:
        """The full WebSocket URL a provider of ``role`` opens."""
        token = self.token(role)
        return f"{self.server_url}/{self.name}" + (f"?token={token}" if token else "")

    async def rest_code(self) -> str | None:
        """``code`` as the REST API reads it (ours only; None on the reference)."""
        if self.tokens is None:
            return None
        async with httpx.AsyncClient(base_url=self.base_url or "", timeout=10) as http:
            r = await http.get(f"/api/sessions/{self.name}/code", headers=auth(self.tokens["observer"]))
            assert r.status_code == 200, r.text
            return str(r.json()["code"])


async def new_room(server: ServerProcess | ReferenceServer) -> Room:
    if isinstance(server, ReferenceServer):
        return Room("reference", server.ws_url, f"peers-{uuid.uuid4().hex[:12]}")
    s = await create_session(server, code="")
    return Room("ours", server.ws_url, s["id"], s["tokens"], server.base_url)


@pytest.fixture
def peer_server(request: pytest.FixtureRequest, side: str, gen: Generation) -> ServerProcess | ReferenceServer:
    """The server of this cell: ours, or the reference of the generation's Yjs."""
    if side == "ours":
        return request.getfixturevalue("ours_server")  # type: ignore[no-any-return]
    return request.getfixturevalue("reference14" if gen.yjs14 else "reference13")  # type: ignore[no-any-return]


@pytest.fixture
async def room(peer_server: ServerProcess | ReferenceServer) -> Room:
    return await new_room(peer_server)


@asynccontextmanager
async def peers(room: Room, gen: Generation, *who: tuple[str, str], server_url: str | None = None,
                wait_synced: bool = True, **opts: Any) -> AsyncIterator[list[JSClient]]:
    """Clients of generation ``gen`` in ``room``, one per ``(name, role)``, started in parallel and
    connected in order (``server_url`` overrides the room's, e.g. a proxy)."""
    async with AsyncExitStack() as stack:
        clients = []
        for name, _role in who:
            client = JSClient(label=f"{gen.name}:{name}", package=gen.package, flavour=gen.flavour_path)
            stack.push_async_callback(client.aclose)
            clients.append(await client.start(wait_ready=False))
        for client in clients:
            await client.wait_event("ready", timeout=30)
        for client, (name, role) in zip(clients, who, strict=True):
            await client.connect(server_url or room.server_url, room.name, room.token(role), name=name, **opts)
        if wait_synced:
            for client in clients:
                await client.wait_synced()
        yield clients


@asynccontextmanager
async def peer(room: Room, gen: Generation, name: str, role: str = "interviewer", **kwargs: Any) -> AsyncIterator[JSClient]:
    async with peers(room, gen, (name, role), **kwargs) as (client,):
        yield client


@asynccontextmanager
async def py_peer(room: Room, role: str = "interviewer") -> AsyncIterator[Doc[Any]]:
    """pycrdt's own client (``pycrdt.Provider`` over httpx-ws) in ``room``, synced on entry."""
    doc: Doc[Any] = Doc()
    async with aconnect_ws(room.url(role)) as ws, Provider(doc, HttpxWebsocket(ws, room.name)) as provider:
        with anyio.fail_after(10):
            await provider.synced.wait()
        yield doc


# ---------------------------------------------------------------------------------------- raw sockets


@asynccontextmanager
async def raw_socket(room: Room, role: str = "interviewer", **kwargs: Any) -> AsyncIterator[ClientConnection]:
    async with connect(room.url(role), max_size=None, **kwargs) as ws:
        yield ws


async def answered(ws: ClientConnection, timeout: float = 5) -> bytes:
    """Send a sync step 1 (empty state vector) and return the step 2 that answers it: the socket is open
    and everything sent before was handled (frames are handled in order)."""
    await ws.send(p.sync_frame(p.SYNC_STEP1, b"\x00"))
    with anyio.fail_after(timeout):
        while True:
            frame = await ws.recv()
            if isinstance(frame, bytes) and frame[:2] == bytes((p.MSG_SYNC, p.SYNC_STEP2)):
                return frame
