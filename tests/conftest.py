"""Shared fixtures: the real server in a subprocess (uvicorn on an ephemeral port) and clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_ws import aconnect_ws
from pycrdt import Doc, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m crdt_server`` as a child process; restartable on the same data directory."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args or []
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/sessions"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRDT_SERVER_")}
        env.update(
            {
                "CRDT_SERVER_CONNECT_RATE": "0",
                "CRDT_SERVER_CREATE_RATE": "0",
                # Run is off unless a test asks for it (start-up probes every toolchain), and every
                # server gets its own sandbox uids: a starting server kills leftovers of its uids.
                "CRDT_SERVER_EXECUTION": "off",
                "CRDT_SERVER_SANDBOX_UID_BASE": str(100_000 + (self.port % 10_000) * 16),
                "CRDT_SERVER_WEB_BUILD": "off",  # no npm per server: page tests pass a prebuilt CRDT_SERVER_WEB_DIR
            },
            **self.env,
        )
        args = [sys.executable, "-m", "crdt_server", "--port", str(self.port), "--data-dir", str(self.data_dir),
                "--log-level", "info", *self.extra_args]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("srv") / "data")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own, for tests that kill or restart it."""
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()


async def create_session(server: ServerProcess, **body: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.post("/api/sessions", json=body)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def py_client(server: ServerProcess, session: dict[str, Any], role: str = "candidate") -> AsyncIterator[Doc]:
    """A pycrdt client (pycrdt.Provider over httpx-ws), synced on entry."""
    import anyio

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
    import anyio

    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(interval)
