"""``crdt-server backup DEST``: an online backup of the database and the signing secret.

Why this is safe beside a live server: the copy is made with SQLite's online backup API from a
connection of its own, in one step, i.e. inside one read transaction. In WAL mode a reader never
blocks the writer (commits go on; only checkpoints wait for the copy to finish), and the copy is
the database exactly as of one commit. Both files land in DEST atomically (temporary file, fsync,
rename), so an interrupted backup never leaves a half-written one; ``--data-dir DEST`` restores it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

from .config import DATABASE_FILE, SECRET_FILE, ConfigError, Settings, build_parser, settings_from
from .logs import report_error
from .storage.files import write_atomic
from .tokens import load_secret_file

DB_NAME, SECRET_NAME = DATABASE_FILE, SECRET_FILE  # the same names as in a data directory: DEST restores as one


class BackupError(Exception):
    pass


def _atomic_write(directory: Path, name: str, fill: object, mode: int = 0o600) -> Path:
    """Write ``directory/name`` via a temporary file in the same directory; ``fill(path)`` writes it."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    target = directory / name
    try:
        os.chmod(tmp, mode)
        fill(Path(tmp))  # type: ignore[operator]
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def _copy_database(source: Path, target: Path) -> int:
    """Copy ``source`` into the (empty) file ``target`` in one backup step; returns its session count."""
    src = sqlite3.connect(source, timeout=30)  # reads only; WAL needs the -shm, so not mode=ro
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: everything in one step, one consistent read transaction
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copy fails SQLite's integrity check: {check}")
            dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file, no -wal beside it
            count = int(dst.execute("SELECT count(*) FROM sessions").fetchone()[0])
        finally:
            dst.close()
    finally:
        src.close()
    return count


def backup(settings: Settings, destination: Path) -> tuple[Path, Path, int]:
    """Write DB_NAME and SECRET_NAME into ``destination``; returns both paths and the session count."""
    if settings.postgres:
        raise BackupError("backs up the SQLite database only; for PostgreSQL use pg_dump (the signing secret "
                          "is in the database, table server_secret, unless CRDT_SERVER_SECRET is set)")
    source = settings.sqlite_path
    if not source.is_file():
        raise BackupError(f"no database at {str(source)!r} (check --data-dir / --database-url)")
    destination.mkdir(parents=True, exist_ok=True)
    if (destination / DB_NAME).resolve() == source.resolve():
        raise BackupError("DEST is the live data directory; choose another directory")
    if (destination / f"{DB_NAME}-wal").exists():
        raise BackupError(f"{str(destination)!r} holds a database in use (a -wal file): is a server running on it?")
    secret = settings.secret or load_secret_file(settings.data_dir)
    if secret is None:
        raise BackupError(f"no signing secret: {str(settings.data_dir / SECRET_NAME)!r} is missing and --secret is unset")
    counted: list[int] = []
    db = _atomic_write(destination, DB_NAME, lambda tmp: counted.append(_copy_database(source, tmp)), 0o600)
    key = destination / SECRET_NAME
    write_atomic(key, secret.encode())  # the same write as the server's own secret file
    return db, key, counted[0]


def build_backup_parser() -> argparse.ArgumentParser:
    parser = build_parser(
        prog="crdt-server backup",
        description="Write a consistent copy of the database and the signing secret into the directory DEST, "
                    "while the server keeps running. Restore by starting the server with --data-dir DEST. "
                    "Finds the data as the server does (these flags, or the server's CRDT_SERVER_* env vars).",
        only={"data_dir", "database_url", "database_schema", "secret"},
    )
    parser.epilog = None
    parser.add_argument("destination", metavar="DEST", type=Path, help="directory to write the backup into (created if missing)")
    return parser


def main(argv: list[str]) -> None:
    given = vars(build_backup_parser().parse_args(argv))
    destination: Path = given.pop("destination")
    try:
        settings = settings_from(given, os.environ)
        db, key, sessions = backup(settings, destination)
    except ConfigError as exc:
        report_error(str(exc), "text")
        raise SystemExit(2) from None
    except (BackupError, OSError, sqlite3.Error) as exc:
        report_error(f"crdt-server backup: {exc}", "text")
        raise SystemExit(1) from None
    print(f"backup written: {db} ({sessions} sessions, {db.stat().st_size} bytes) and {key}", file=sys.stdout)
