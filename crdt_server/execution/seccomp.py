"""Seccomp deny-list, compiled once with libseccomp (pyseccomp) into a BPF program.

bwrap loads it from an fd (`--seccomp FD`) just before exec'ing the program; in degraded
mode the fork server installs it with prctl. A deny-list (default ALLOW) keeps every runtime
working; what it removes is kernel attack surface and sandbox-escape primitives (ptrace,
mount, new namespaces, keyrings, bpf, perf, io_uring, kexec, modules, TIOCSTI...).
Foreign architectures (i386, x32) are killed by libseccomp's bad-arch default.
See docs/design/sandbox.md.
"""

from __future__ import annotations

import errno
import logging
import tempfile

log = logging.getLogger(__name__)

DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    "unshare", "setns",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "reboot", "init_module", "finit_module", "delete_module",
    "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "nfsservctl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm", "uselib",
)

CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
AF_INET, AF_INET6, AF_PACKET, AF_VSOCK = 2, 10, 17, 40


def build_filter(*, deny_inet: bool) -> bytes:
    """Return the BPF program. deny_inet=True (degraded mode, no network namespace) also
    refuses AF_INET/AF_INET6/AF_PACKET sockets, which covers UDP where Landlock cannot."""
    import pyseccomp as sc  # imported lazily: needs libseccomp.so.2 at run time

    f = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(eperm, name)
        except (OSError, ValueError, RuntimeError) as exc:  # unknown on this arch/kernel headers
            log.debug("seccomp: skipping %s: %s", name, exc)
    for flag in CLONE_NAMESPACE_FLAGS:
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes flags in a struct BPF cannot read: say "not implemented" so glibc and
    # runtimes fall back to clone(2), whose flags the rules above do check.
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for request in (TIOCSTI, TIOCLINUX):
        f.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    families = (AF_VSOCK, AF_INET, AF_INET6, AF_PACKET) if deny_inet else (AF_VSOCK,)
    for family in families:
        f.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.EQ, family))
    with tempfile.TemporaryFile() as tf:
        f.export_bpf(tf)
        tf.seek(0)
        return tf.read()
