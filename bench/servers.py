"""The servers under test, behind one interface.

A *side* knows how to start its server on an ephemeral loopback port, how to make a room and the
y-websocket connect parameters for it, and which process tree to measure.

* ``OursServer``: crdt-server. A room is a session made with ``POST /api/sessions``; clients
  connect to ``ws://127.0.0.1:P/ws/sessions/<id>?token=<role token>``.
* ``ReferenceServer``: ``@y/websocket-server`` 0.1.1 (Node). Any room name works, params are
  ignored; clients connect to ``ws://127.0.0.1:P/<room>``.
* ``HocuspocusServer``: ``@hocuspocus/server`` (Node), started by ``hocuspocus_server.mjs``. Any
  document name works; clients connect to ``ws://127.0.0.1:P`` and name the document in every
  message (the load generator's ``hocuspocus`` protocol).
* ``FloorServer``: ``floor_server.py``, a bare relay on our stack with write-ahead (opt-in column
  ``floor``): a lower bound for what any server built on the stack costs. Rooms as the reference's.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from crdt_server.testing import free_port

from . import procs

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
DEFAULT_OURS_CMD = "uv run crdt-server --host {host} --port {port} --data-dir {tmpdir}"


# Installed by `npm ci`; a node_modules that lacks one of them predates a package.json change.
NODE_PACKAGES = ("@y/websocket-server", "y-websocket", "@hocuspocus/server", "@hocuspocus/provider")


def node_package_version(name: str) -> str:
    """The installed version of a bench/ Node package (for the table's title and the JSON)."""
    try:
        return str(json.loads((BENCH_DIR / "node_modules" / name / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def ensure_node_modules() -> None:
    """`npm ci` from the committed lock file when bench/node_modules is missing or incomplete."""
    if all((BENCH_DIR / "node_modules" / name / "package.json").exists() for name in NODE_PACKAGES):
        return
    npm = shutil.which("npm")
    if not npm:
        raise SystemExit("bench: npm not found; Node 20 + npm are needed for the load generator")
    print("bench: bench/node_modules missing or incomplete, running `npm ci` ...", file=sys.stderr)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BENCH_DIR, check=True)


def reference_server_script(pkg_dir: Path = BENCH_DIR / "node_modules" / "@y" / "websocket-server") -> Path:
    """The reference server's executable in an installed ``@y/websocket-server`` (tests/peers runs others)."""
    pkg = json.loads((pkg_dir / "package.json").read_text())
    b = pkg.get("bin")
    rel = b if isinstance(b, str) else (b.get("y-websocket-server") or next(iter(b.values())))
    return pkg_dir / rel


@dataclass
class Room:
    name: str
    writer_params: dict = field(default_factory=dict)
    reader_params: dict = field(default_factory=dict)

    def spec(self) -> dict:
        """As the load generator expects it."""
        return {"name": self.name, "writerParams": self.writer_params, "readerParams": self.reader_params}


def named_rooms(n: int) -> list[Room]:
    """Rooms of a server that takes any name and needs no parameters (the Node servers)."""
    return [Room(f"bench-{uuid.uuid4().hex[:16]}") for _ in range(n)]


class StartFailed(Exception):
    pass


class ServerSide:
    label = "?"
    ws_path = ""
    protocol = "y-websocket"  # the load generator's client: y-websocket or hocuspocus

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.port = 0
        self.proc: procs.Managed | None = None
        self._measure_pid: int | None = None
        self.tmpdir: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def command(self) -> tuple[list[str], dict, Path]:
        raise NotImplementedError

    def health_path(self) -> str:
        return "/"

    def start(self, tag: str, timeout: float = 60.0) -> None:
        self.port = free_port()
        self.tmpdir = tempfile.mkdtemp(prefix=f"bench-{self.label}-")
        argv, env, cwd = self.command()
        log = self.logdir / f"{tag}-{self.label}-server.log"
        self.proc = procs.Managed(argv, name=f"{self.label} server", cwd=cwd, env=env, log_path=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise StartFailed(f"exited with code {self.proc.proc.returncode} (log: {log})")
            if self._healthy():
                break
            time.sleep(0.2)
        else:
            raise StartFailed(f"no healthy answer on port {self.port} within {timeout:.0f}s (log: {log})")
        self._measure_pid = procs.listening_pid(self.port) or self.proc.pid

    def _healthy(self) -> bool:
        try:
            c = http.client.HTTPConnection(HOST, self.port, timeout=2)
            c.request("GET", self.health_path())
            r = c.getresponse()
            r.read()
            c.close()
            return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    # -- measuring -------------------------------------------------------------------------
    def measured_pid(self) -> int:
        """The server process (the one holding the listening socket); its descendants count too."""
        pid = self._measure_pid
        if pid is None or not Path(f"/proc/{pid}").exists():
            pid = self.proc.pid if self.proc else 0
        return pid

    def cpu_seconds(self) -> float:
        return procs.tree_cpu_seconds(self.measured_pid())

    def rss_bytes(self) -> int:
        return procs.tree_rss_bytes(self.measured_pid())

    # -- rooms -----------------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}{self.ws_path}"

    def create_rooms(self, n: int) -> list[Room]:
        raise NotImplementedError


class ReferenceServer(ServerSide):
    label = "reference"
    ws_path = ""

    def command(self):
        env = dict(os.environ, HOST=HOST, PORT=str(self.port))
        env.pop("YPERSISTENCE", None)  # in-memory, its default
        env.pop("CALLBACK_URL", None)
        return [shutil.which("node") or "node", str(reference_server_script())], env, BENCH_DIR

    def create_rooms(self, n: int) -> list[Room]:
        return named_rooms(n)


class OursServer(ServerSide):
    label = "ours"
    ws_path = "/ws/sessions"

    def __init__(self, logdir: Path, cmd_template: str, reader_role: str = "observer"):
        super().__init__(logdir)
        self.cmd_template = cmd_template
        self.reader_role = reader_role

    def health_path(self) -> str:
        return "/health"

    def command(self):
        cmd = self.cmd_template.format(port=self.port, tmpdir=self.tmpdir, host=HOST)
        env = dict(os.environ)
        # A benchmark is one client IP making thousands of sessions/sockets: lift the per-IP rate
        # limits (0 = unlimited) and the per-request logging, unless the caller set them.
        env.setdefault("CRDT_SERVER_LOG_LEVEL", "warning")
        env.setdefault("CRDT_SERVER_CREATE_RATE", "0")
        env.setdefault("CRDT_SERVER_CONNECT_RATE", "0")
        env.setdefault("CRDT_SERVER_MAX_CONNECTIONS_PER_IP", "0")  # idle holds 5,000 sockets from 127.0.0.1
        env.setdefault("CRDT_SERVER_WEB_BUILD", "off")  # no page build competing with the measurement
        return shlex.split(cmd), env, REPO_DIR

    def create_rooms(self, n: int) -> list[Room]:
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get("CRDT_SERVER_API_KEY")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        rooms = []
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            for _ in range(n):
                for attempt in range(3):
                    try:
                        conn.request("POST", "/api/sessions", body=b"{}", headers=headers)
                        r = conn.getresponse()
                        body = r.read()
                        break
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                        if attempt == 2:
                            raise
                if r.status != 201:
                    raise RuntimeError(f"POST /api/sessions -> {r.status}: {body[:300]!r}")
                j = json.loads(body)
                tokens = j["tokens"]
                rooms.append(Room(
                    j["id"],
                    {"token": tokens["interviewer"]},
                    {"token": tokens.get(self.reader_role) or tokens["candidate"]},
                ))
        finally:
            conn.close()
        return rooms


class HocuspocusServer(ServerSide):
    label = "hocuspocus"
    protocol = "hocuspocus"

    def command(self):
        env = dict(os.environ, HOST=HOST, PORT=str(self.port))
        return [shutil.which("node") or "node", str(BENCH_DIR / "hocuspocus_server.mjs")], env, BENCH_DIR

    def create_rooms(self, n: int) -> list[Room]:
        return named_rooms(n)


class FloorServer(ServerSide):
    """``bench/floor_server.py``: the least a server on this stack does per message (its docstring)."""

    label = "floor"

    def command(self):
        argv = [sys.executable, "-P", str(BENCH_DIR / "floor_server.py"),
                "--host", HOST, "--port", str(self.port), "--data-dir", str(self.tmpdir)]
        return argv, dict(os.environ), REPO_DIR

    def create_rooms(self, n: int) -> list[Room]:
        return named_rooms(n)


class ReferenceAsOurs(ReferenceServer):
    """`--ours-cmd reference`: run the reference server in the 'ours' column (harness self-check)."""

    label = "ours"


class HocuspocusAsOurs(HocuspocusServer):
    """`--ours-cmd hocuspocus`: run Hocuspocus in the 'ours' column (self-check of its client mode)."""

    label = "ours"
