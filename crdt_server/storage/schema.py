"""The SQLite schema as numbered migrations, and the start-up checks run before serving."""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger(__name__)

# Versioned schema: MIGRATIONS[i] upgrades user_version i -> i + 1. Append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        language TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        last_seq INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_expiry ON sessions(expires_at);
    CREATE TABLE updates (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        conn_id TEXT NOT NULL,
        role TEXT NOT NULL,
        name TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE snapshots (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        ts REAL NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_session ON events(session_id, id);
    """,
    """
    ALTER TABLE sessions ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE sessions SET stored_bytes =
        (SELECT COALESCE(SUM(length(data)), 0) FROM updates WHERE updates.session_id = sessions.id)
        + (SELECT COALESCE(SUM(length(data)), 0) FROM snapshots WHERE snapshots.session_id = sessions.id);
    CREATE TABLE health_probe (id INTEGER PRIMARY KEY, ts REAL NOT NULL);
    """,
    # 3: lifetimes (crdt_server/lifetimes.py); an ended row without ended_at counts from updated_at
    "ALTER TABLE sessions ADD COLUMN keep_until REAL NOT NULL DEFAULT 0; ALTER TABLE sessions ADD COLUMN ended_at REAL;"
    " ALTER TABLE sessions ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;",
    # 4: the interviewer's private notes, a second document with its own log (rows.DOCS)
    """
    ALTER TABLE sessions ADD COLUMN notes_seq INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE notes_updates (
        session_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, conn_id TEXT NOT NULL,
        role TEXT NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE notes_snapshots (
        session_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    """,
    # 5: the interviewer's lock and Run switch (crdt_server/service.py)
    "ALTER TABLE sessions ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;"
    " ALTER TABLE sessions ADD COLUMN run_enabled INTEGER NOT NULL DEFAULT 1;",
]


class StorageCorrupted(RuntimeError):
    """The database file is damaged or not a database: the server refuses to start on it."""


def check_integrity(conn: sqlite3.Connection, path: object) -> None:
    """``PRAGMA quick_check`` (O(size), no index cross-checks): refuse a damaged file at start
    instead of answering 500 to everything later."""
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        raise StorageCorrupted(f"database {path} is unreadable ({exc}); restore it from a backup") from None
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        raise StorageCorrupted(f"database {path} is corrupted ({'; '.join(problems)[:200]}); restore it from a backup")


def migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for target in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        for statement in MIGRATIONS[target].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={target + 1}")
        conn.execute("COMMIT")
        log.info("storage schema migrated to version %d", target + 1)
