"""What a run sees: the bwrap command line (full mode) or the host directories, Landlock rules and
environment (direct mode), plus rlimits and the compile driver. Builds requests for the fork
server; starts and supervises nothing (that is sandbox.py).

Full mode ("bwrap"), per run:

    bwrap --unshare-all --disable-userns --die-with-parent --new-session --cap-drop ALL
          empty root, /usr read-only, fake /etc/passwd, private /tmp and /dev/shm tmpfs (sized),
          sources read-only in /box, cleared env, seccomp deny-list from an fd  -> program

Direct mode (degraded, no namespaces): the sources are written to a root-owned per-slot box/
directory on the host, the scratch directory is a per-slot tmp/, and the fork server applies
Landlock (read-only system paths, read-write tmp/) and seccomp itself before exec.

Compiled languages compile inside the same sandbox: a bash driver runs the compiler with its
output on a dedicated pipe, reports the exit status on another pipe, then execs the program,
so the supervisor can switch from the compile deadline to the run deadline.
See docs/design/sandbox.md.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from .languages import Mount
from .settings import ExecutionSettings
from .types import LAUNCH_ENV, Program, Slot, Tools

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
ROOT_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "nsswitch.conf")
SHM_SIZE = 16 * 1024 * 1024
MECHANISMS = ("bwrap", "direct")


class Fds:
    """Pipe/memfd bookkeeping for one run; every fd is closed exactly once."""

    def __init__(self) -> None:
        self.give: list[int] = []  # installed in the child as fd 0, 1, 2, 3...
        self._open: set[int] = set()

    def track(self, fd: int) -> int:
        self._open.add(fd)
        return fd

    def handover(self, fd: int) -> int:
        """Hand `fd` to the child; returns its number there."""
        self.track(fd)
        self.give.append(fd)
        return len(self.give) - 1

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        return self.track(r), self.track(w)

    def close(self, fd: int) -> None:
        if fd in self._open:
            self._open.discard(fd)
            os.close(fd)

    def close_given(self) -> None:
        for fd in self.give:
            self.close(fd)

    def close_all(self) -> None:
        for fd in list(self._open):
            self.close(fd)


def memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class Layout:
    """Filesystem layout and fork-server requests for one mechanism ("bwrap" or "direct")."""

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
        if mechanism not in MECHANISMS:
            raise ValueError(f"unknown sandbox mechanism {mechanism!r}")
        self.settings = settings
        self.mechanism = mechanism
        self.tools = tools
        self.state_dir = state_dir
        self.seccomp_program = seccomp_program
        self.landlock_abi = landlock_abi
        self._root_args = self._make_root_args()

    # --- host state ----------------------------------------------------------------------

    def paths(self, slot: Slot) -> tuple[str, str]:
        """(box, tmp) as seen by the program."""
        if self.mechanism == "bwrap":
            return "/box", "/tmp"
        return str(slot.host_dir / "box"), str(slot.host_dir / "tmp")

    def stage_dir(self, mount: Mount) -> Path:
        return self.state_dir / "stage" / mount.sandbox.strip("/").replace("/", "_")

    def prepare(self, slots: list[Slot]) -> None:
        """Fake /etc files, staging mountpoints, direct-mode slot dirs; all root-owned."""
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
        for path in self.state_dir.rglob("*"):  # executables stay so (the wheel's bwrap copy, bwrap.py)
            os.chmod(path, 0o755 if path.is_dir() or path.stat().st_mode & 0o100 else 0o644)
        os.chmod(self.state_dir, 0o755)
        if self.mechanism == "direct":
            for slot in slots:
                self.reset_slot_dirs(slot)

    def reset_slot_dirs(self, slot: Slot) -> None:
        """Direct mode: fresh box/ (root:slot 0750) and tmp/ (slot 0700) for every run."""
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

    # --- requests ------------------------------------------------------------------------

    def rlimits(self, program: Program, slot: Slot) -> dict[str, tuple[int, int]]:
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
        # RLIMIT_AS caps virtual memory per process: it breaks runtimes that reserve large
        # address ranges up front (address_space_ok=False), and is only a fallback for a
        # missing memory cgroup (see docs/design/sandbox.md).
        no_memory_cgroup = slot.cgroup is None or slot.cgroup.memory_dir is None
        if no_memory_cgroup and program.address_space_ok:
            limits["RLIMIT_AS"] = (s.memory_bytes, s.memory_bytes)
        return limits

    def driver(self, program: Program, tmp: str, status_fd: int, compile_fd: int) -> list[str]:
        """bash: compile (output on compile_fd), report the status on status_fd, exec the program."""
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

    def bwrap_request(self, slot: Slot, program: Program, inner: list[str], fds: Fds, info_fd: int) -> dict[str, Any]:
        s = self.settings
        assert self.tools.bwrap
        uid = str(slot.uid)
        b = [self.tools.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
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
              "--size", str(SHM_SIZE), "--tmpfs", "/dev/shm"]
        stage = []
        for m in program.mounts:
            if m.staged:
                target = self.stage_dir(m)
                target.mkdir(mode=0o755, exist_ok=True)  # only ever mounted in a private namespace
                stage.append([m.host, str(target)])
            b += ["--ro-bind", str(self.stage_dir(m)) if m.staged else m.host, m.sandbox]
        for name, data in program.files.items():
            b += ["--ro-bind-data", str(fds.handover(memfd(name, data))), f"/box/{name}"]
        b += ["--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
        for key, value in self._env(program, "/tmp").items():
            b += ["--setenv", key, value]
        if self.seccomp_program:
            b += ["--seccomp", str(fds.handover(memfd("seccomp", self.seccomp_program)))]
        return {
            "argv": [*b, "--", *inner],
            "env": LAUNCH_ENV,
            "cwd": "/",
            "stage": stage,
            "seccomp": False,  # bwrap installs it after setting up the namespaces
        }

    def direct_request(self, slot: Slot, program: Program, inner: list[str]) -> dict[str, Any]:
        box, tmp = self.paths(slot)
        for name, data in program.files.items():
            path = slot.host_dir / "box" / name
            path.write_bytes(data)
            os.chown(path, 0, slot.uid)
            os.chmod(path, 0o640)
        read_only = ["/usr", *ROOT_DIRS, *(f"/etc/{n}" for n in (*ETC_FILES, "passwd", "group", "hosts")),
                     *(f"/etc/{n}" for n in program.etc), "/proc", "/dev/urandom", "/dev/random", box,
                     *(m.host for m in program.mounts)]
        landlock = None
        if self.landlock_abi:
            landlock = {"abi": self.landlock_abi, "read_only": read_only,
                        "read_write": [tmp, "/dev/null", "/dev/zero", "/dev/full"]}
        return {"argv": inner, "env": self._env(program, tmp), "cwd": tmp, "landlock": landlock,
                "seccomp": bool(self.seccomp_program)}
