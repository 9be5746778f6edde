"""Several server processes on one PostgreSQL schema and one Redis prefix, for the cluster tests.

Redis is ``CRDT_SERVER_TEST_REDIS_URL`` (default: the local server). A test that needs it and cannot
reach it fails under ``CI=true`` and is skipped, with the reason printed, otherwise (like tests/pg.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from crdt_server.testing import ServerProcess, free_port

from .pg import URL, new_schema, pg_sql, require, require_postgres

REDIS_URL = os.environ.get("CRDT_SERVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_command(url: str, *args: str) -> bytes:
    """One command over a raw socket (no client library between the test and what it checks)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=5) as s:
        s.sendall(b"".join([f"*{len(args)}\r\n".encode()] + [f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args]))
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


@cache
def _unreachable() -> str | None:
    try:
        if not redis_command(REDIS_URL, "PING").startswith(b"+PONG"):
            return f"Redis at {REDIS_URL} does not answer PING"
    except OSError as exc:
        return f"Redis at {REDIS_URL} is unreachable ({exc!r})"
    return None


def require_redis() -> None:
    require(_unreachable())


class Deployment:
    """Servers sharing one schema (hence one signing secret) and one Redis prefix."""

    def __init__(self, root: Path, schema: str, redis_url: str = REDIS_URL) -> None:
        self.root, self.schema, self.redis_url = root, schema, redis_url
        self.prefix = f"crdt-test-{uuid.uuid4().hex[:12]}"
        self.servers: list[ServerProcess] = []

    def server(self, *args: str, **env: str) -> ServerProcess:
        srv = ServerProcess(self.root / f"data{len(self.servers)}", database=(URL, self.schema),
                            extra_args=["--redis-prefix", self.prefix, "--redis-check-interval", "0.5",
                                        "--redis-timeout", "2", *args],
                            env={"CRDT_SERVER_REDIS_URL": self.redis_url, **env})
        self.servers.append(srv)
        srv.start()
        return srv

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return pg_sql(sql, *args, schema=self.schema)

    def stop(self) -> None:
        for srv in self.servers:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.kill9()


@contextmanager
def deployment(root: Path, redis_url: str = REDIS_URL) -> Iterator[Deployment]:
    require_postgres()
    require_redis()
    with new_schema() as schema:
        d = Deployment(root, schema, redis_url)
        try:
            yield d
        finally:
            d.stop()


class PrivateRedis:
    """A redis-server of the test's own on a free port: restarted by the test, never the shared one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            require("redis-server is not installed (.ci/run installs it)")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis_command(self.url, "PING").startswith(b"+PONG"):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
