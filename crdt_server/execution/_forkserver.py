"""Per-slot fork server. Stdlib only; run as root: `python -I -S _forkserver.py CONFIG`.

Why a fork server: joining a cgroup costs an RCU grace period per run (4-7 ms median on the
2-core development host, 15-30 ms under load) and every wrapper exec (prlimit, nice, setpriv...)
about 1 ms (docs/design/sandbox.md has the measurements). This process joins
the slot's cgroups once and stays there, so everything it forks starts inside them for free.
Being single-threaded, it can safely run Python between fork and exec, which a threaded
server (preexec_fn) or uvloop cannot: setsid, fd layout, oom_score_adj, a private mount
namespace for staged toolchains, rlimits, nice, Landlock, the uid drop, seccomp.

Protocol on fd 0 (a SOCK_SEQPACKET socket): the server sends one JSON request with the fds to
install (SCM_RIGHTS); we reply {"pid": N}, later {"exit": N, "code": C} (C < 0: killed by
signal -C). EOF on the socket (server gone) kills the current run and exits. We are also a
child subreaper for our runs, so orphans (bwrap's init) are reaped here, not by the server.
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
from typing import Any

SYS_landlock_create_ruleset = 444
SYS_landlock_add_rule = 445
SYS_landlock_restrict_self = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
FILE_RIGHTS_ALL = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
FD_STAGING = 100  # received fds are parked above this before being dup2'ed to their targets

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class SpawnError(Exception):
    pass


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise SpawnError(f"{what}: {os.strerror(err)}")


def landlock_abi() -> int:
    """0 when Landlock is unavailable, else the kernel's ABI version."""
    try:
        abi = _libc.syscall(SYS_landlock_create_ruleset, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    except (OSError, AttributeError):
        return 0
    return max(int(abi), 0)


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM (ABI 1)
    if abi >= 2:
        rights |= 1 << 13  # REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def apply_landlock(abi: int, read_only: list[str], read_write: list[str]) -> None:
    """Filesystem: read/exec only `read_only`, anything in `read_write`; no TCP (ABI >= 4);
    no signals or abstract sockets outside the domain (ABI >= 6)."""
    handled_fs = _fs_rights(abi)
    handled_net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    if abi >= 6:
        attr = struct.pack("=QQQ", handled_fs, handled_net, scoped)
    elif abi >= 4:
        attr = struct.pack("=QQ", handled_fs, handled_net)
    else:
        attr = struct.pack("=Q", handled_fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _libc.syscall(SYS_landlock_create_ruleset, buf, len(attr), 0)
    _check(-1 if ruleset < 0 else 0, "landlock_create_ruleset")
    ro = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    for paths, rights in ((read_only, ro), (read_write, handled_fs)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # optional path absent on this host
            allowed = rights & handled_fs
            if not os.path.isdir(path):
                allowed &= FILE_RIGHTS_ALL
            rule = struct.pack("=Qi", allowed, fd)
            rbuf = ctypes.create_string_buffer(rule, len(rule))
            _check(_libc.syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, rbuf, 0),
                   f"landlock_add_rule {path}")
            os.close(fd)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.syscall(SYS_landlock_restrict_self, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply_seccomp(program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")


def _stage_mounts(mounts: list[list[str]]) -> None:
    """Bind toolchains the slot uid cannot reach into a private mount namespace of our own."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    for src, dst in mounts:
        _check(_libc.mount(src.encode(), dst.encode(), None, MS_BIND | MS_REC, None), f"bind {src}")


def _child(req: dict[str, Any], fds: list[int], seccomp_program: bytes) -> None:
    """In the forked child: set everything up, then exec. Never returns."""
    try:
        os.setsid()
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):  # Python ignores/handles these
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, FD_STAGING) for fd in fds]
        targets = req["fd_targets"]
        for fd, target in zip(parked, targets, strict=True):
            os.dup2(fd, target)  # the copy is inheritable
        os.closerange(max(targets) + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # raising needs no privilege: runs die first, the fork server (and host) last
        if req.get("stage"):
            _stage_mounts(req["stage"])
        for name, (soft, hard) in req["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if req["nice"]:
            os.nice(req["nice"])
        os.chdir(req["cwd"])
        landlock = req.get("landlock")
        if landlock:
            apply_landlock(landlock["abi"], landlock["read_only"], landlock["read_write"])
        uid, gid = req["uid"], req["gid"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise SpawnError("still root after the uid drop")
        if req.get("seccomp") and seccomp_program:
            apply_seccomp(seccomp_program)
        argv = req["argv"]
        os.execve(argv[0], argv, req["env"])
    except BaseException as exc:  # noqa: BLE001 - report anything, then die
        try:
            os.write(2, f"crdt-sandbox fork server: {type(exc).__name__}: {exc}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(127)


def main() -> None:
    config = json.loads(sys.argv[1])
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the server
    sock = socket.socket(fileno=0)
    if os.getppid() == 1:
        return
    for procs in config["cgroup_procs"]:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    seccomp_program = base64.b64decode(config.get("seccomp_b64", ""))

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sock.send(json.dumps({"ready": os.getpid()}).encode())
    current = 0
    while True:
        readable, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in readable:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        while True:  # reap everything: our runs and the orphans we inherit as subreaper
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == current:
                current = 0
                sock.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())
        if sock.fileno() in readable:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 64)
            if not msg:
                if current:
                    try:
                        os.killpg(current, signal.SIGKILL)
                    except OSError:
                        pass
                return
            req = json.loads(msg)
            pid = os.fork()
            if pid == 0:
                sock.close()
                _child(req, fds, seccomp_program)
            for fd in fds:
                os.close(fd)
            current = pid
            sock.send(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    main()
