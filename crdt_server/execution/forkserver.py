"""Server side of a slot's fork server (the process itself is _forkserver.py).

One fork server per slot, started once and kept: it sits in the slot's cgroups so runs start
inside them without a per-run cgroup migration, and it does the privileged set-up between
fork and exec that the threaded server cannot do itself. All I/O here is async.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
from typing import Any

import anyio
from anyio.abc import Process

from . import _forkserver
from .errors import SandboxError
from .types import LAUNCH_ENV, Slot

log = logging.getLogger(__name__)


class ForkServerGone(SandboxError):
    """The fork server exited (killed, or crashed); it is restarted on the next run."""


class ForkServer:
    """Client for one slot's fork server (protocol in _forkserver.py)."""

    def __init__(self, slot: Slot, seccomp_program: bytes | None) -> None:
        self.slot = slot
        self._seccomp = seccomp_program or b""
        self._process: Process | None = None
        self._sock: socket.socket | None = None
        self.pid: int | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None and self._sock is not None

    async def start(self) -> None:
        config = {
            "cgroup_procs": list(self.slot.cgroup.procs_files) if self.slot.cgroup else [],
            "seccomp_b64": base64.b64encode(self._seccomp).decode(),
        }
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = await anyio.open_process(
                [sys.executable, "-I", "-S", _forkserver.__file__, json.dumps(config)],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=None,
                env=LAUNCH_ENV,
                start_new_session=True,
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        with anyio.fail_after(15):
            ready = await self._recv()
        self.pid = int(ready["ready"])

    async def _recv(self) -> dict[str, Any]:
        if self._sock is None:
            raise ForkServerGone(f"slot {self.slot.index}: fork server is not running")
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                await anyio.wait_readable(self._sock)
                continue
            if not data:
                await self.aclose()
                raise ForkServerGone(f"slot {self.slot.index}: fork server exited")
            message: dict[str, Any] = json.loads(data)
            return message

    async def spawn(self, request: dict[str, Any], fds: list[int]) -> int:
        if not self.alive:
            log.warning("slot %d: (re)starting its fork server", self.slot.index)
            await self.aclose()
            await self.start()
        assert self._sock is not None
        payload = json.dumps(request).encode()
        # Shielded: once the request is sent, the pid must be read back, or a cancelled caller
        # would leave a run nobody supervises and the next caller would read its pid.
        with anyio.CancelScope(shield=True), anyio.fail_after(15):
            while True:
                try:
                    socket.send_fds(self._sock, [payload], fds)
                    break
                except BlockingIOError:
                    await anyio.wait_writable(self._sock)
            while True:
                reply = await self._recv()
                if "pid" in reply:
                    return int(reply["pid"])  # (stale "exit" messages of an abandoned run are skipped)
        raise AssertionError("unreachable")

    async def wait_exit(self, pid: int) -> int:
        """Exit status of `pid`: >= 0 exit code, < 0 killed by that signal."""
        while True:
            reply = await self._recv()
            if reply.get("exit") == pid:
                return int(reply["code"])

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._sock is not None:
                self._sock.close()  # EOF: the fork server kills its current run and exits
                self._sock = None
            if self._process is not None:
                with anyio.move_on_after(2):
                    await self._process.wait()
                if self._process.returncode is None:
                    self._process.kill()
                    await self._process.wait()
                self._process = None
