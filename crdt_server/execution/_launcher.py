"""Degraded-mode launcher: confine this process, then exec the program. Stdlib only.

Used when user namespaces (hence bubblewrap) are unavailable, e.g. in a default Docker
container. Runs as root, started by the server as `python -I -S _launcher.py JSON`, and in
order: joins the slot's cgroups, sets rlimits and niceness, restricts the filesystem and TCP
with Landlock (if the kernel has it), drops to the slot uid, sets no_new_privs, installs the
seccomp BPF program (read from an fd), then execs. Nothing of this can be done from the
server process itself without preexec_fn, which is unsafe in a threaded server and
unsupported by uvloop.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import struct
import sys

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

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(*args: int | ctypes.c_void_p | ctypes.Array[ctypes.c_char] | None) -> int:
    return _libc.syscall(*args)


def landlock_abi() -> int:
    """0 when Landlock is unavailable, else the kernel's ABI version."""
    try:
        abi = _syscall(SYS_landlock_create_ruleset, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
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


def _fail(what: str) -> None:
    err = ctypes.get_errno()
    os.write(2, f"crdt-sandbox launcher: {what}: {os.strerror(err)}\n".encode())
    os._exit(125)


def apply_landlock(abi: int, read_only: list[str], read_write: list[str]) -> None:
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
    ruleset = _syscall(SYS_landlock_create_ruleset, buf, len(attr), 0)
    if ruleset < 0:
        _fail("landlock_create_ruleset")
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
            if _syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, rbuf, 0) != 0:
                _fail(f"landlock_add_rule {path}")
            os.close(fd)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _fail("no_new_privs")
    if _syscall(SYS_landlock_restrict_self, ruleset, 0) != 0:
        _fail("landlock_restrict_self")
    os.close(ruleset)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply_seccomp(program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _fail("no_new_privs")
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        _fail("seccomp")


def main() -> None:
    spec = json.loads(sys.argv[1])
    for procs in spec["cgroup_procs"]:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    for name, (soft, hard) in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    os.nice(spec["nice"])
    os.chdir(spec["cwd"])
    if spec["landlock_abi"] > 0:
        apply_landlock(spec["landlock_abi"], spec["read_only"], spec["read_write"])
    os.setgroups([])
    os.setresgid(spec["gid"], spec["gid"], spec["gid"])
    os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    if os.getuid() == 0 or os.geteuid() == 0:
        os._exit(125)
    seccomp_fd = spec["seccomp_fd"]
    if seccomp_fd >= 0:
        with os.fdopen(seccomp_fd, "rb") as f:
            program = f.read()
        apply_seccomp(program)
    argv = spec["argv"]
    os.execve(argv[0], argv, spec["env"])


if __name__ == "__main__":
    main()
