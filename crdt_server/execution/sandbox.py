"""Run one program in a sandbox and supervise it without ever blocking the event loop.

Each slot has a fork server (forkserver.py, _forkserver.py) that already sits in the slot's
memory+pids cgroups. For a run, layout.py builds the request (bwrap command line or direct-mode
directories), the fork server forks, sets rlimits/nice/oom_score_adj, drops to the slot uid and
execs; this module feeds stdin, captures stdout/stderr up to the output limit, enforces the
compile and run deadlines, and afterwards kills and reaps whatever the run left behind.
See docs/design/sandbox.md.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from .errors import SandboxError
from .forkserver import ForkServer, ForkServerGone
from .layout import Fds, Layout
from .procs import kill_and_reap, processes_of
from .types import Outcome, Program, Slot

log = logging.getLogger(__name__)

LEFTOVER_GRACE = 2.0  # seconds spent killing/reaping a slot's leftovers before giving up


@dataclass
class _RunState:
    limit: int
    deadline: float
    deadline_changed: anyio.Event = field(default_factory=anyio.Event)
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    compile_output: bytearray = field(default_factory=bytearray)
    compile_status: int | None = None
    returncode: int | None = None
    timed_out: bool = False
    truncated: bool = False
    killed: bool = False
    disk_full: bool = False  # direct mode: killed by the scratch watcher
    open_streams: int = 2
    streams_done: anyio.Event = field(default_factory=anyio.Event)


def _disk_usage(root: Path, stop_above: int) -> int:
    """Bytes allocated under `root` (no symlinks followed); stops counting past `stop_above`."""
    total = 0
    stack = [str(root)]
    while stack and total <= stop_above:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def _exit_code(returncode: int | None) -> int:
    if returncode is None:
        return 137
    return 128 - returncode if returncode < 0 else returncode


class Sandbox:
    """Runs Programs for the worker pool; one run per slot at a time.

    mechanism "bwrap" (namespaces: the full sandbox) or "direct" (degraded: no namespaces).
    """

    def __init__(self, layout: Layout) -> None:
        # the layout holds what this sandbox is (settings, mechanism, tools, filter): one copy of each
        self.layout = layout
        self.settings = layout.settings
        self.mechanism = layout.mechanism
        self.tools = layout.tools
        self.seccomp_program = layout.seccomp_program
        self._forkservers: dict[int, ForkServer] = {}
        self._dirty: set[int] = set()  # slots whose leftovers could not be cleared yet

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, slots: list[Slot]) -> None:
        self.layout.prepare(slots)
        for slot in slots:
            # direct mode: the fork server applies this filter itself; bwrap gets it per run.
            forkserver = ForkServer(slot, self.seccomp_program if self.mechanism == "direct" else None)
            self._forkservers[slot.index] = forkserver
            await forkserver.start()

    async def aclose(self) -> None:
        for forkserver in self._forkservers.values():
            await forkserver.aclose()
        self._forkservers.clear()

    def forkserver_pids(self) -> set[int]:
        return {s.pid for s in self._forkservers.values() if s.pid is not None}

    def paths(self, slot: Slot) -> tuple[str, str]:
        """(box, tmp) as seen by the program."""
        return self.layout.paths(slot)

    # --- supervision -----------------------------------------------------------------------

    async def execute(self, slot: Slot, program: Program) -> Outcome:
        forkserver = self._forkservers[slot.index]
        if slot.index in self._dirty and not await self.clear_slot(slot):
            raise SandboxError(f"slot {slot.index} still has processes of uid {slot.uid}")
        fds = Fds()
        try:
            in_r, in_w = fds.pipe()
            out_r, out_w = fds.pipe()
            err_r, err_w = fds.pipe()
            for fd in (in_r, out_w, err_w):
                fds.handover(fd)
            status_r = compile_r = info_r = -1
            _, tmp = self.layout.paths(slot)
            inner = list(program.run)
            if program.compile:
                status_r, status_w = fds.pipe()
                compile_r, compile_w = fds.pipe()
                inner = self.layout.driver(program, tmp, fds.handover(status_w), fds.handover(compile_w))
            if self.mechanism == "bwrap":
                info_r, info_w = fds.pipe()  # bwrap reports its in-namespace init's host pid here
                request = self.layout.bwrap_request(slot, program, inner, fds, fds.handover(info_w))
            else:
                request = self.layout.direct_request(slot, program, inner)
            request.update(
                rlimits={k: list(v) for k, v in self.layout.rlimits(program, slot).items()},
                nice=self.settings.nice,
                uid=slot.uid,
                gid=slot.uid,
                fd_targets=list(range(len(fds.give))),
            )
            for fd in (in_w, out_r, err_r, status_r, compile_r, info_r):
                if fd >= 0:
                    os.set_blocking(fd, False)
            oom_before = slot.cgroup.oom_kills() if slot.cgroup else 0
            started = time.monotonic()
            pid = await forkserver.spawn(request, fds.give)
        except BaseException:
            fds.close_all()
            if self.mechanism == "direct":
                self.layout.reset_slot_dirs(slot)
            raise
        fds.close_given()
        state = _RunState(
            limit=self.settings.output_limit,
            deadline=started + (program.compile_timeout if program.compile else program.timeout),
        )
        try:
            await self._supervise(pid, forkserver, slot, program, state, fds, in_w, out_r, err_r, status_r, compile_r)
            duration = time.monotonic() - started
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(pid, forkserver, slot, state, info_r)
                fds.close_all()
        oom = bool(slot.cgroup and slot.cgroup.oom_kills() > oom_before)
        exit_code = _exit_code(state.returncode)
        compile_error = False
        if program.compile:
            if state.compile_status is not None and state.compile_status != 0:
                compile_error, exit_code = True, state.compile_status
            elif state.compile_status is None:  # killed (timeout, OOM, output cap) while compiling
                compile_error = True
        # Died of a signal the sandbox did not send (no timeout, output cap, scratch watcher or OOM):
        # the program's own, or something outside (an operator, another process of the host).
        limited = state.timed_out or state.truncated or state.disk_full or oom or compile_error
        outside = exit_code - 128 if exit_code > 128 and state.returncode is not None and not limited else 0
        stderr = bytes(state.stderr)
        if compile_error and not stderr:
            stderr = bytes(state.compile_output)
        return Outcome(
            stdout=bytes(state.stdout),
            stderr=stderr,
            exit_code=exit_code,
            timed_out=state.timed_out,
            truncated=state.truncated,
            duration=duration,
            compile_error=compile_error,
            compile_output=bytes(state.compile_output),
            oom_killed=oom,
            signal=outside,
        )

    def _kill(self, pid: int, slot: Slot, state: _RunState) -> None:
        state.killed = True
        try:
            os.killpg(pid, signal.SIGKILL)  # the fork server made pid a session/group leader
        except (ProcessLookupError, PermissionError):
            pass
        if slot.cgroup:
            slot.cgroup.kill(exclude=self.forkserver_pids())

    async def _supervise(
        self, pid: int, forkserver: ForkServer, slot: Slot, program: Program, state: _RunState, fds: Fds,
        in_w: int, out_r: int, err_r: int, status_r: int, compile_r: int,
    ) -> None:
        def kill() -> None:
            self._kill(pid, slot, state)

        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump, out_r, state.stdout, state, kill)
            tg.start_soon(self._pump, err_r, state.stderr, state, kill)
            tg.start_soon(self._feed, in_w, program.stdin, fds)
            if program.compile:
                tg.start_soon(self._pump_compile_output, compile_r, state)
                tg.start_soon(self._watch_status, status_r, state, program.timeout)
            tg.start_soon(self._watchdog, state, kill)
            if self.mechanism == "direct":  # no tmpfs to cap the scratch dir: watch its size
                tg.start_soon(self._watch_disk, slot, state, kill)
            try:
                state.returncode = await forkserver.wait_exit(pid)
            except ForkServerGone:
                tg.cancel_scope.cancel()  # its runs died with it (--die-with-parent); _finish sweeps
                gone = True
            else:
                gone = False
            # The top process is gone; make sure nothing still holds the pipes, drain, stop.
            if slot.cgroup and slot.cgroup.pids() - self.forkserver_pids():
                kill()
            with anyio.move_on_after(0 if gone else 1.0):
                await state.streams_done.wait()
            tg.cancel_scope.cancel()
        if gone:
            raise ForkServerGone(f"slot {slot.index}: the fork server died during the run")

    @staticmethod
    async def _read(fd: int) -> bytes:
        while True:
            try:
                return os.read(fd, 65536)
            except BlockingIOError:
                await anyio.wait_readable(fd)

    async def _pump(self, fd: int, buf: bytearray, state: _RunState, kill: Callable[[], None]) -> None:
        """Capture one stream up to the limit; one byte more kills the run (truncated)."""
        try:
            while chunk := await self._read(fd):
                room = state.limit - len(buf)
                if len(chunk) > room:
                    buf += chunk[:room]
                    state.truncated = True
                    kill()
                    return
                buf += chunk
        finally:
            state.open_streams -= 1
            if state.open_streams <= 0:
                state.streams_done.set()

    async def _feed(self, fd: int, data: bytes, fds: Fds) -> None:
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    await anyio.wait_writable(fd)
        except OSError:  # EPIPE: the program does not read its stdin
            pass
        finally:
            fds.close(fd)  # EOF for the program

    async def _pump_compile_output(self, fd: int, state: _RunState) -> None:
        """Compiler messages: kept up to the output limit, the rest drained (no kill)."""
        while data := await self._read(fd):
            room = state.limit - len(state.compile_output)
            if room > 0:
                state.compile_output += data[:room]

    async def _watch_status(self, fd: int, state: _RunState, run_timeout: float) -> None:
        raw = b""
        while data := await self._read(fd):
            raw += data
            if b"\n" in raw:
                break
        try:
            state.compile_status = int(raw.strip() or b"-1")
        except ValueError:
            return
        if state.compile_status == 0:
            state.deadline = time.monotonic() + run_timeout
            state.deadline_changed.set()

    async def _watchdog(self, state: _RunState, kill: Callable[[], None]) -> None:
        changed = state.deadline_changed
        while True:
            remaining = state.deadline - time.monotonic()
            if remaining <= 0:
                state.timed_out = True
                kill()
                return
            with anyio.move_on_after(remaining):
                await changed.wait()
                changed = anyio.Event()  # fired once; from now on only sleep to the new deadline

    async def _watch_disk(self, slot: Slot, state: _RunState, kill: Callable[[], None]) -> None:
        """Direct mode: kill the run once its host scratch dir exceeds tmp_size_mb (checked
        every 100 ms in a worker thread; RLIMIT_FSIZE bounds how far one file can overshoot)."""
        limit = self.settings.tmp_size_mb * 1024 * 1024
        tmp = slot.host_dir / "tmp"
        while True:
            await anyio.sleep(0.1)
            used = await anyio.to_thread.run_sync(_disk_usage, tmp, limit)
            if used > limit:
                log.warning("slot %d: scratch dir over %d MB, run killed", slot.index, self.settings.tmp_size_mb)
                state.disk_full = True
                kill()
                return

    async def _finish(self, pid: int, forkserver: ForkServer, slot: Slot, state: _RunState, info_r: int) -> None:
        """Always runs (shielded): kill the tree if needed, collect the exit, clear leftovers."""
        if state.returncode is None:
            self._kill(pid, slot, state)  # sets state.killed: leftovers are swept below
            if forkserver.alive:
                try:
                    with anyio.move_on_after(5.0):
                        state.returncode = await forkserver.wait_exit(pid)
                except ForkServerGone:
                    pass
            if state.returncode is None and forkserver.alive:
                log.error("slot %d: run %d did not exit after SIGKILL; restarting its fork server", slot.index, pid)
                await forkserver.aclose()
        # bwrap's outer process exits as soon as its init reports the program's status, so the
        # init (and, for a moment, the rest of the pid namespace) can outlive it; the fork
        # server reaps it. Wait for it via a pidfd: once it is dead the namespace is empty.
        # In direct mode whatever the program daemonised is still alive: kill it by uid.
        clean = info_r >= 0 and await self._wait_init(info_r, slot)
        if not clean or state.killed:
            await self.clear_slot(slot)
        if self.mechanism == "direct":
            try:
                self.layout.reset_slot_dirs(slot)
            except OSError as exc:  # state dir removed by a concurrent shutdown
                log.debug("could not reset slot %d dirs: %s", slot.index, exc)

    async def _wait_init(self, info_r: int, slot: Slot) -> bool:
        """Wait (async, via a pidfd) until bwrap's in-namespace init has exited."""
        try:
            info = json.loads(os.read(info_r, 4096) or b"{}")
            pid = int(info["child-pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return False  # bwrap died before cloning, or we could not tell: sweep by uid
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True
        try:
            if os.stat(f"/proc/{pid}").st_uid != slot.uid:
                return True  # already reaped and the pid reused: not ours
            with anyio.move_on_after(LEFTOVER_GRACE) as scope:
                await anyio.wait_readable(pidfd)
            return not scope.cancelled_caught
        except OSError:
            return True
        finally:
            os.close(pidfd)

    async def clear_slot(self, slot: Slot) -> bool:
        """Kill every process of the slot uid (and reap ours); True when none is left."""
        deadline = time.monotonic() + LEFTOVER_GRACE
        uids = {slot.uid}
        while True:
            if slot.cgroup:
                slot.cgroup.kill(exclude=self.forkserver_pids())
            kill_and_reap(uids)
            if not processes_of(uids):
                self._dirty.discard(slot.index)
                return True
            if time.monotonic() > deadline:
                self._dirty.add(slot.index)
                log.warning("slot %d: processes of uid %d still present after %.1fs", slot.index, slot.uid,
                            LEFTOVER_GRACE)
                return False
            await anyio.sleep(0.01)
