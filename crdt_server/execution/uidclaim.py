"""Claiming a range of sandbox uids host-wide, so two servers on one host never share slot uids.

A server kills every process of its slot uids at start and after runs (procs.py): with two servers
on the same range, the second one's start killed the first one's runs. So each uid of the range is
claimed with an exclusive ``flock`` on a per-uid file in a host-wide directory, held open for the
life of the service (the kernel drops it when the process dies, so a crashed server's range is free
again, and its leftovers are then cleared by the next claimant). Per-uid files (not one per range)
make overlapping ranges of different sizes collide too.
"""

from __future__ import annotations

import fcntl
import os
import pwd
from pathlib import Path

LOCK_DIRS = (Path("/run/crdt-server"), Path("/tmp/crdt-server-uids"))
SEARCH_RANGES = 64  # how many ranges past the default one an automatic claim tries


class UidRangeTaken(Exception):
    """The uid range is claimed by another server on this host (or belongs to an account)."""


def lock_dir() -> Path:
    """The first usable directory of LOCK_DIRS: every server on a host picks the same one."""
    for d in LOCK_DIRS:
        try:
            d.mkdir(mode=0o700, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    raise UidRangeTaken(f"no writable directory for uid locks among {', '.join(map(str, LOCK_DIRS))}")


class UidClaim:
    """Exclusive locks on uids base..base+count-1; release() (or process exit) frees them."""

    def __init__(self, base: int, count: int, fds: list[int]) -> None:
        self.base, self.count, self._fds = base, count, fds

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    @classmethod
    def try_claim(cls, base: int, count: int) -> UidClaim:
        directory = lock_dir()
        fds: list[int] = []
        try:
            for uid in range(base, base + count):
                try:
                    account = pwd.getpwuid(uid).pw_name
                except KeyError:
                    account = ""
                if account:
                    raise UidRangeTaken(f"uid {uid} belongs to account {account!r}")
                fd = os.open(directory / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fds.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise UidRangeTaken(f"uid {uid} is in use by another crdt-server on this host "
                                        f"(lock {directory}/uid-{uid}.lock)") from None
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(base, count, fds)

    @classmethod
    def claim(cls, base: int, count: int, *, search: bool) -> UidClaim:
        """Claim base..base+count-1; with `search`, the next free range of the same size instead."""
        first_error: UidRangeTaken | None = None
        for attempt in range(SEARCH_RANGES + 1 if search else 1):
            try:
                return cls.try_claim(base + attempt * count, count)
            except UidRangeTaken as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error
