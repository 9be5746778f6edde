"""Spawn one program in a sandbox and supervise it without ever blocking the event loop.

Full mode: a chain of small execs, each doing one thing, so no preexec_fn is needed (unsafe
in a threaded server, unsupported by uvloop):

    [unshare -m: stage toolchains the slot uid cannot reach]  (rare: rustup under /root)
    [sh: join the slot's memory+pids cgroups]                  (when the host has them)
    prlimit (CPU, NPROC, FSIZE, NOFILE, CORE) -> nice -> setpriv (slot uid, no groups)
    -> bwrap (all namespaces, empty read-only root, /usr read-only, private /tmp tmpfs,
       cleared env, new session, seccomp from an fd) -> program

Degraded mode (no user namespaces): a stdlib Python launcher (_launcher.py) does the same
as root (cgroups, rlimits, nice, Landlock, uid drop, seccomp) and execs the program.

Compiled languages compile inside the same sandbox: a bash driver runs the compiler with its
output on a dedicated pipe, reports the exit status on another pipe, then execs the program,
so the supervisor can switch from the compile deadline to the run deadline.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, Process

from . import _launcher
from .cgroups import SlotCgroup
from .errors import SandboxError
from .languages import Mount
from .procs import kill_and_reap, processes_of
from .settings import ExecutionSettings

log = logging.getLogger(__name__)

LAUNCH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
ROOT_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "nsswitch.conf")
LEFTOVER_GRACE = 2.0  # seconds spent killing/reaping a slot's leftovers before giving up


@dataclass(frozen=True)
class Tools:
    """Host binaries the launch chain uses (absolute paths)."""

    sh: str | None
    bash: str | None
    bwrap: str | None
    prlimit: str | None
    setpriv: str | None
    nice: str | None
    unshare: str | None
    mount: str | None

    @classmethod
    def find(cls) -> Tools:
        def which(name: str) -> str | None:
            return shutil.which(name, path=LAUNCH_ENV["PATH"])

        return cls(*(which(n) for n in ("sh", "bash", "bwrap", "prlimit", "setpriv", "nice", "unshare", "mount")))


@dataclass(frozen=True)
class Slot:
    index: int
    uid: int
    cgroup: SlotCgroup | None
    host_dir: Path  # degraded mode: holds box/ (sources, read-only) and tmp/ (scratch)


@dataclass(frozen=True)
class Program:
    """One sandboxed job, paths already resolved for the slot (see Sandbox.paths)."""

    files: Mapping[str, bytes]
    run: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    etc: tuple[str, ...] = ()
    stdin: bytes = b""
    timeout: float = 5.0
    compile_timeout: float = 15.0
    address_space_ok: bool = True


@dataclass
class Outcome:
    stdout: bytes
    stderr: bytes
    exit_code: int
    timed_out: bool
    truncated: bool
    duration: float
    compile_error: bool = False
    compile_output: bytes = b""
    oom_killed: bool = False


@dataclass
class _RunState:
    limit: int
    deadline: float
    phase: str  # "compile" | "run"
    deadline_changed: anyio.Event = field(default_factory=anyio.Event)
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    compile_output: bytearray = field(default_factory=bytearray)
    compile_status: int | None = None
    timed_out: bool = False
    truncated: bool = False
    killed: bool = False
    open_streams: int = 0
    streams_done: anyio.Event = field(default_factory=anyio.Event)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _exit_code(returncode: int | None) -> int:
    if returncode is None:
        return 137
    return 128 - returncode if returncode < 0 else returncode


class Sandbox:
    """Runs Programs for the worker pool; one instance per service, one run per slot at a time.

    mechanism "bwrap" (namespaces) or "launcher" (degraded: no namespaces).
    """

    def __init__(
        self,
        settings: ExecutionSettings,
        *,
        mechanism: str,
        tools: Tools,
        state_dir: Path,
        seccomp_program: bytes | None,
        landlock_abi: int = 0,
    ) -> None:
        self.settings = settings
        self.mechanism = mechanism
        self.tools = tools
        self.state_dir = state_dir
        self.seccomp_program = seccomp_program
        self.landlock_abi = landlock_abi
        self._active: set[int] = set()  # pids the event loop still waits for
        self._dirty: set[int] = set()  # slots whose leftovers could not be cleared yet
        self._root_args = self._make_root_args()

    @property
    def active_pids(self) -> frozenset[int]:
        return frozenset(self._active)

    # --- layout ------------------------------------------------------------------------

    def paths(self, slot: Slot) -> tuple[str, str]:
        """(box, tmp) as seen by the program."""
        if self.mechanism == "bwrap":
            return "/box", "/tmp"
        return str(slot.host_dir / "box"), str(slot.host_dir / "tmp")

    def stage_dir(self, mount: Mount) -> Path:
        return self.state_dir / "stage" / mount.sandbox.strip("/").replace("/", "_")

    def prepare_state(self, slots: list[Slot]) -> None:
        """Create the fake /etc files, staging mountpoints and degraded-mode slot dirs."""
        etc = self.state_dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "stage").mkdir(exist_ok=True)
        (etc / "hosts").write_text("127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost\n")
        for slot in slots:
            u = slot.uid
            (etc / f"passwd.{slot.index}").write_text(
                f"root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{u}:{u}:sandbox:/tmp:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            )
            (etc / f"group.{slot.index}").write_text(f"root:x:0:\nsandbox:x:{u}:\nnogroup:x:65534:\n")
            slot.host_dir.mkdir(mode=0o755, exist_ok=True)
            self._reset_slot_dirs(slot)
        for path in self.state_dir.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.chmod(self.state_dir, 0o755)

    def _reset_slot_dirs(self, slot: Slot) -> None:
        """Degraded mode: fresh box/ (root:slot 0750) and tmp/ (slot 0700) for every run."""
        box, tmp = slot.host_dir / "box", slot.host_dir / "tmp"
        for d in (box, tmp):
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)  # rmtree never follows symlinks
        box.mkdir(mode=0o750)
        os.chown(box, 0, slot.uid)
        os.chmod(box, 0o750)
        tmp.mkdir(mode=0o700)
        os.chown(tmp, slot.uid, slot.uid)

    def _make_root_args(self) -> list[str]:
        args = ["--ro-bind", "/usr", "/usr"]
        for d in ROOT_DIRS:
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
        for name in ETC_FILES:
            if os.path.exists(f"/etc/{name}"):
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        args += ["--ro-bind", str(self.state_dir / "etc" / "hosts"), "/etc/hosts"]
        return args

    # --- argv ----------------------------------------------------------------------------

    def _rlimits(self, program: Program) -> dict[str, tuple[int, int]]:
        s = self.settings
        cpu = math.ceil(max(program.timeout, program.compile_timeout if program.compile else 0)) + 1
        fsize = s.max_file_size_mb * 1024 * 1024
        limits = {
            "RLIMIT_CPU": (cpu, cpu + 1),
            "RLIMIT_NPROC": (s.max_processes, s.max_processes),
            "RLIMIT_FSIZE": (fsize, fsize),
            "RLIMIT_NOFILE": (s.max_open_files, s.max_open_files),
            "RLIMIT_CORE": (0, 0),
        }
        return limits

    def _driver(self, program: Program, tmp: str, status_fd: int, compile_fd: int) -> list[str]:
        assert program.compile is not None and self.tools.bash
        script = (
            f"cd {shlex.quote(tmp)} || exit 125\n"
            f"{shlex.join(program.compile)} </dev/null >&{compile_fd} 2>&1\n"
            "rc=$?\n"
            f'echo "$rc" >&{status_fd}\n'
            f"exec {compile_fd}>&- {status_fd}>&-\n"
            '[ "$rc" -eq 0 ] || exit "$rc"\n'
            f"exec {shlex.join(program.run)}\n"
        )
        return [self.tools.bash, "--norc", "--noprofile", "-c", script]

    def _env(self, program: Program, tmp: str) -> dict[str, str]:
        env = {"PATH": SANDBOX_PATH, "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "MALLOC_ARENA_MAX": "2"}
        env.update(program.env)
        return env

    def _full_argv(self, slot: Slot, program: Program, inner: list[str], fds: list[int], info_fd: int) -> list[str]:
        s, t = self.settings, self.tools
        assert t.bwrap and t.prlimit and t.setpriv and t.sh
        uid = str(slot.uid)
        chain: list[str] = []
        staged = [m for m in program.mounts if m.staged]
        if staged:
            assert t.unshare and t.mount
            for m in staged:  # empty root-owned mountpoint, only ever mounted in a private ns
                self.stage_dir(m).mkdir(mode=0o755, exist_ok=True)
            chain += [t.unshare, "--mount", "--propagation", "private", "--"]
        procs = slot.cgroup.procs_files if slot.cgroup else ()
        if staged or procs:
            lines = [f"{t.mount} --bind {shlex.quote(m.host)} {shlex.quote(str(self.stage_dir(m)))} || exit 125"
                     for m in staged]
            lines += [f"echo $$ > {shlex.quote(f)} || exit 125" for f in procs]
            lines.append('exec "$@"')
            chain += [t.sh, "-c", "\n".join(lines), "sh"]
        limits = self._rlimits(program)
        chain += [t.prlimit, *(f"--{_PRLIMIT[k]}={a}:{b}" for k, (a, b) in limits.items()), "--"]
        if t.nice and s.nice:
            chain += [t.nice, "-n", str(s.nice)]
        chain += [t.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]

        b = [t.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
             "--new-session", "--cap-drop", "ALL", "--uid", uid, "--gid", uid, "--hostname", "sandbox",
             "--info-fd", str(info_fd)]
        b += self._root_args
        etc = self.state_dir / "etc"
        b += ["--ro-bind", str(etc / f"passwd.{slot.index}"), "/etc/passwd",
              "--ro-bind", str(etc / f"group.{slot.index}"), "/etc/group"]
        for name in program.etc:
            if os.path.exists(f"/etc/{name}"):
                b += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        b += ["--proc", "/proc", "--dev", "/dev",
              "--size", str(s.tmp_size_mb * 1024 * 1024), "--tmpfs", "/tmp",
              "--size", str(16 * 1024 * 1024), "--tmpfs", "/dev/shm"]
        for m in program.mounts:
            b += ["--ro-bind", str(self.stage_dir(m)) if m.staged else m.host, m.sandbox]
        for name, data in program.files.items():
            fd = _memfd(name, data)
            fds.append(fd)
            b += ["--ro-bind-data", str(fd), f"/box/{name}"]
        b += ["--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
        for key, value in self._env(program, "/tmp").items():
            b += ["--setenv", key, value]
        if self.seccomp_program:
            seccomp_fd = _memfd("seccomp", self.seccomp_program)
            fds.append(seccomp_fd)
            b += ["--seccomp", str(seccomp_fd)]
        return chain + b + ["--", *inner]

    def _degraded_argv(self, slot: Slot, program: Program, inner: list[str], fds: list[int]) -> list[str]:
        box, tmp = self.paths(slot)
        for name, data in program.files.items():
            path = slot.host_dir / "box" / name
            path.write_bytes(data)
            os.chown(path, 0, slot.uid)
            os.chmod(path, 0o640)
        limits = self._rlimits(program)
        if slot.cgroup is None or slot.cgroup.memory_dir is None:
            if program.address_space_ok:  # no memory cgroup: per-process RLIMIT_AS is all we have
                limits["RLIMIT_AS"] = (self.settings.memory_bytes, self.settings.memory_bytes)
        seccomp_fd = -1
        if self.seccomp_program:
            seccomp_fd = _memfd("seccomp", self.seccomp_program)
            fds.append(seccomp_fd)
        read_only = ["/usr", *ROOT_DIRS, *(f"/etc/{n}" for n in (*ETC_FILES, "passwd", "group", "hosts")),
                     *(f"/etc/{n}" for n in program.etc), "/proc", "/dev/urandom", "/dev/random", box,
                     *(m.host for m in program.mounts)]
        spec = {
            "cgroup_procs": list(slot.cgroup.procs_files) if slot.cgroup else [],
            "rlimits": {k: list(v) for k, v in limits.items()},
            "nice": self.settings.nice,
            "cwd": tmp,
            "landlock_abi": self.landlock_abi,
            "read_only": read_only,
            "read_write": [tmp, "/dev/null", "/dev/zero", "/dev/full"],
            "uid": slot.uid,
            "gid": slot.uid,
            "seccomp_fd": seccomp_fd,
            "argv": inner,
            "env": self._env(program, tmp),
        }
        return [sys.executable, "-I", "-S", _launcher.__file__, json.dumps(spec)]

    # --- supervision -----------------------------------------------------------------------

    async def execute(self, slot: Slot, program: Program) -> Outcome:
        if self.mechanism not in ("bwrap", "launcher"):
            raise SandboxError(f"unknown sandbox mechanism {self.mechanism!r}")
        if slot.index in self._dirty:
            if not await self.clear_slot(slot):
                raise SandboxError(f"slot {slot.index} still has processes of uid {slot.uid}")
        passed: list[int] = []
        keep: list[int] = []
        status_r = compile_r = info_r = -1
        try:
            _, tmp = self.paths(slot)
            if program.compile:
                status_r, status_w = os.pipe()
                compile_r, compile_w = os.pipe()
                keep += [status_r, compile_r]
                passed += [status_w, compile_w]
                inner = self._driver(program, tmp, status_w, compile_w)
            else:
                inner = list(program.run)
            if self.mechanism == "bwrap":
                info_r, info_w = os.pipe()  # bwrap reports its in-namespace init's host pid here
                keep.append(info_r)
                passed.append(info_w)
                argv = self._full_argv(slot, program, inner, passed, info_w)
            else:
                argv = self._degraded_argv(slot, program, inner, passed)
            oom_before = slot.cgroup.oom_kills() if slot.cgroup else 0
            started = time.monotonic()
            process = await anyio.open_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=LAUNCH_ENV,
                start_new_session=True,
                pass_fds=passed,
            )
        except BaseException:
            for fd in passed + keep:
                os.close(fd)
            if self.mechanism == "launcher":
                self._reset_slot_dirs(slot)
            raise
        for fd in passed:
            os.close(fd)
        self._active.add(process.pid)
        state = _RunState(
            limit=self.settings.output_limit,
            deadline=started + (program.compile_timeout if program.compile else program.timeout),
            phase="compile" if program.compile else "run",
        )
        try:
            await self._supervise(process, slot, program, state, status_r, compile_r)
            duration = time.monotonic() - started
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(process, slot, state, info_r)
                for fd in keep:
                    os.close(fd)
        oom = bool(slot.cgroup and slot.cgroup.oom_kills() > oom_before)
        exit_code = _exit_code(process.returncode)
        compile_error = False
        if program.compile:
            if state.compile_status is not None and state.compile_status != 0:
                compile_error, exit_code = True, state.compile_status
            elif state.compile_status is None:  # killed (timeout, OOM, output cap) while compiling
                compile_error = True
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
        )

    def _killer(self, process: Process, slot: Slot, state: _RunState):  # noqa: ANN202
        def kill() -> None:
            state.killed = True
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if slot.cgroup:
                slot.cgroup.kill()

        return kill

    async def _supervise(
        self, process: Process, slot: Slot, program: Program, state: _RunState, status_r: int, compile_r: int
    ) -> None:
        kill = self._killer(process, slot, state)
        async with anyio.create_task_group() as tg:
            assert process.stdout and process.stderr and process.stdin
            state.open_streams = 2
            tg.start_soon(self._pump, process.stdout, state.stdout, state, kill)
            tg.start_soon(self._pump, process.stderr, state.stderr, state, kill)
            tg.start_soon(self._feed, process.stdin, program.stdin)
            if program.compile:
                tg.start_soon(self._pump_compile_output, compile_r, state)
                tg.start_soon(self._watch_status, status_r, state, program.timeout)
            tg.start_soon(self._watchdog, state, kill)
            await process.wait()
            # The top process is gone; make sure nothing still holds the pipes, drain, stop.
            if slot.cgroup and slot.cgroup.pids():
                kill()
            with anyio.move_on_after(1.0):
                await state.streams_done.wait()
            tg.cancel_scope.cancel()

    async def _pump(self, stream: ByteReceiveStream, buf: bytearray, state: _RunState, kill) -> None:  # noqa: ANN001
        try:
            while True:
                chunk = await stream.receive(65536)
                room = state.limit - len(buf)
                if len(chunk) > room:
                    buf += chunk[:room]
                    state.truncated = True
                    kill()
                    return
                buf += chunk
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            state.open_streams -= 1
            if state.open_streams <= 0:
                state.streams_done.set()

    async def _feed(self, stream: ByteSendStream, data: bytes) -> None:
        try:
            if data:
                await stream.send(data)
            await stream.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _read_fd(self, fd: int) -> bytes:
        os.set_blocking(fd, False)
        while True:
            await anyio.wait_readable(fd)
            try:
                return os.read(fd, 65536)
            except BlockingIOError:
                continue

    async def _pump_compile_output(self, fd: int, state: _RunState) -> None:
        """Compiler messages: kept up to the output limit, the rest drained (no kill)."""
        while data := await self._read_fd(fd):
            room = state.limit - len(state.compile_output)
            if room > 0:
                state.compile_output += data[:room]

    async def _watch_status(self, fd: int, state: _RunState, run_timeout: float) -> None:
        raw = b""
        while data := await self._read_fd(fd):
            raw += data
            if b"\n" in raw:
                break
        try:
            state.compile_status = int(raw.strip() or b"-1")
        except ValueError:
            return
        if state.compile_status == 0:
            state.phase = "run"
            state.deadline = time.monotonic() + run_timeout
            state.deadline_changed.set()

    async def _watchdog(self, state: _RunState, kill) -> None:  # noqa: ANN001
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

    async def _finish(self, process: Process, slot: Slot, state: _RunState, info_r: int) -> None:
        """Always runs (shielded): kill the tree, wait for the top process, clear leftovers."""
        try:
            if process.returncode is None:
                self._killer(process, slot, state)()
                with anyio.move_on_after(5.0):
                    await process.wait()
            if process.returncode is None:
                log.error("sandbox process %s did not exit after SIGKILL", process.pid)
        finally:
            self._active.discard(process.pid)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    try:
                        await stream.aclose()
                    except (OSError, anyio.BrokenResourceError):
                        pass
        # bwrap's outer process exits as soon as its init reports the program's status, so the
        # init (and, for a moment, the rest of the pid namespace) can outlive it, orphaned to
        # us: wait for that init by pid and reap it. Once it is dead the namespace is empty.
        # In degraded mode whatever the program daemonised is still alive: kill by uid.
        clean = info_r >= 0 and await self._reap_init(info_r, slot)
        if not clean or state.killed:
            await self.clear_slot(slot)
        if self.mechanism == "launcher":
            try:
                self._reset_slot_dirs(slot)
            except OSError as exc:  # state dir removed by a concurrent shutdown
                log.debug("could not reset slot %d dirs: %s", slot.index, exc)

    async def _reap_init(self, info_r: int, slot: Slot) -> bool:
        """Wait (async, via a pidfd) for bwrap's in-namespace init to exit and reap it."""
        try:
            os.set_blocking(info_r, False)
            info = json.loads(os.read(info_r, 4096) or b"{}")
            pid = int(info["child-pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return False  # bwrap died before cloning: nothing was started
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True  # already reaped by bwrap itself
        try:
            if os.stat(f"/proc/{pid}").st_uid != slot.uid:
                return True  # reaped and the pid reused by someone else: not ours
            with anyio.move_on_after(LEFTOVER_GRACE) as scope:
                await anyio.wait_readable(pidfd)
            if scope.cancelled_caught:
                return False
            try:
                os.waitpid(pid, os.WNOHANG)  # ours if bwrap exited first (we are its subreaper)
            except ChildProcessError:
                pass  # still bwrap's child, or already reaped
            return True
        except OSError:
            return True
        finally:
            os.close(pidfd)

    async def clear_slot(self, slot: Slot) -> bool:
        """Kill and reap every process of the slot uid; True when none is left."""
        deadline = time.monotonic() + LEFTOVER_GRACE
        uids = {slot.uid}
        while True:
            if slot.cgroup:
                slot.cgroup.kill()
            kill_and_reap(uids, protect=self._active)
            if not [p for p in processes_of(uids) if p.pid not in self._active]:
                self._dirty.discard(slot.index)
                return True
            if time.monotonic() > deadline:
                self._dirty.add(slot.index)
                log.warning("slot %d: processes of uid %d still present after %.1fs", slot.index, slot.uid,
                            LEFTOVER_GRACE)
                return False
            await anyio.sleep(0.01)

    def reap_background(self, uids: set[int]) -> None:
        """Reap (never kill) sandbox zombies orphaned to us; safe while runs are in flight."""
        kill_and_reap(uids, protect=self._active, kill=False)


_PRLIMIT = {
    "RLIMIT_CPU": "cpu",
    "RLIMIT_NPROC": "nproc",
    "RLIMIT_FSIZE": "fsize",
    "RLIMIT_NOFILE": "nofile",
    "RLIMIT_CORE": "core",
    "RLIMIT_AS": "as",
}
