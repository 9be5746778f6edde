"""SQLite connections as the store opens them, and the WAL checkpoints that run beside the writer."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("crdt_server.storage.sqlite")


def connect(path: Path, durability: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def checkpoint_loop(path: Path, durability: str, stop: threading.Event, commits: Callable[[], int],
                    interval: float = 1.0) -> None:
    """Copy the WAL back into the database every ``interval`` s while there are new commits, until
    ``stop`` is set (then once more).

    PASSIVE never blocks the writer; the fsync it does costs this thread, not a commit that a
    broadcast is waiting for.
    """
    conn = connect(path, durability)
    try:
        done = commits()
        while True:
            stopping = stop.wait(interval)
            if commits() != done or stopping:
                done = commits()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint failed: %r", exc)
            if stopping:
                return
    finally:
        conn.close()
