"""The data directory on disk: private modes, one live server per database, atomic small files.

Why a lock: two servers on one SQLite file each keep their own document of a session, and a
snapshot taken from one skips rows the other committed (edits lost for good). The lock is an
``flock`` held for the life of the serving process; the kernel drops it when the process dies,
so a crash never leaves a stale lock. Tools that only read (a backup) do not take it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


class DataDirInUse(RuntimeError):
    """Another live server holds this database."""


def private_dir(path: Path) -> None:
    """Create ``path`` (0700); an existing directory we own is tightened to 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty if missing, and make it 0600 (SQLite gives -wal/-shm the db's mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


@contextmanager
def hold_database(db_path: Path) -> Iterator[None]:
    """Hold the serving lock of ``db_path`` (non-blocking); ``DataDirInUse`` if another process has it."""
    private_dir(db_path.parent)
    path = lock_path(db_path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DataDirInUse(
                f"data directory {db_path.parent} is in use by another running crdt-server (pid {holder}); "
                "stop it or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file so that it is either absent or complete: temp file, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
