"""Run the real server as a subprocess: used by the test suite and by the benchmarks.

``ServerProcess`` starts ``python -m crdt_server`` on a free loopback port with its own data
directory, waits until ``GET /health`` answers, and stops, kills or restarts it (on the same data
directory, so a restart shows what survived). Not used by the server itself.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout (the server runs from here)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except OSError:
        return False


class ServerProcess:
    """``python -m crdt_server`` as a child process; restartable on the same data directory.

    Rate limits are off and Run (code execution) is off unless ``extra_args``/``env`` turn it on;
    every instance gets its own sandbox uid range. The server's output goes to
    ``server-<port>.log`` beside the data directory (``log()`` reads it).
    """

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 database: tuple[str, str] | None = None) -> None:
        """``database``: (postgresql:// URL, schema) to serve instead of the data directory's SQLite file."""
        self.data_dir = data_dir
        self.database = database
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

    def start(self, timeout: float = 20) -> None:
        """Start the server and return once ``/health`` answers 200."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRDT_SERVER_")}
        env.update(
            {
                "CRDT_SERVER_CONNECT_RATE": "0",
                "CRDT_SERVER_CREATE_RATE": "0",
                # Run is off unless asked for (start-up probes every toolchain), and every server
                # gets its own sandbox uids: a starting server kills leftovers of its uids.
                "CRDT_SERVER_EXECUTION": "off",
                # No test server builds the interview page (npm); the page tests build it once.
                "CRDT_SERVER_WEB_BUILD": "off",
                "CRDT_SERVER_SANDBOX_UID_BASE": str(100_000 + (self.port % 10_000) * 16),
            },
            **self.env,
        )
        db = ["--database-url", self.database[0], "--database-schema", self.database[1]] if self.database else []
        args = [sys.executable, "-m", "crdt_server", "--port", str(self.port), "--data-dir", str(self.data_dir),
                "--log-level", "info", *db, *self.extra_args]
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if _healthy(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """Send ``sig`` and wait; returns the exit code (None if never started)."""
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
