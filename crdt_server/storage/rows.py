"""Row-level SQL shared by the SQLite store's operations (each runs inside the writer's transaction)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ..lifetimes import Lifetimes
from .base import MAIN_DOC, NOTES_DOC, SESSION_FIELDS, EventRecord, SessionChange, SessionRecord, UpdateRecord
from .sqlite_lifetimes import refresh_expiry

# Per document: (update log table, snapshot table, the sessions column counting its log's rows).
DOCS = {MAIN_DOC: ("updates", "snapshots", "last_seq"), NOTES_DOC: ("notes_updates", "notes_snapshots", "notes_seq")}


def updates(c: sqlite3.Connection, session_id: str, after: int, limit: int, doc: str = MAIN_DOC) -> list[UpdateRecord]:
    rows = c.execute(
        f"SELECT seq, ts, conn_id, role, name, data FROM {DOCS[doc][0]} WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (session_id, after, limit),
    ).fetchall()
    return [UpdateRecord(session_id, d, r, ci, n, seq=s, ts=ts) for s, ts, ci, r, n, d in rows]


def playback_rows(c: sqlite3.Connection, session_id: str, seq: int) -> tuple[bytes | None, int, list[UpdateRecord]]:
    """The newest checkpoint at or before ``seq`` and the rows after it up to ``seq``, in one read."""
    c.execute("BEGIN")
    try:
        snap = c.execute("SELECT seq, data FROM snapshots WHERE session_id = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
                         (session_id, seq)).fetchone()
        base = snap[0] if snap else 0
        tail = [u for u in updates(c, session_id, base, seq - base) if u.seq <= seq]
    finally:
        c.execute("COMMIT")
    return (snap[1] if snap else None), base, tail


def seq_at(c: sqlite3.Connection, session_id: str, at: float) -> tuple[int, int]:
    """(the last row committed at or before ``at``, 0 if none; the session's last row)."""
    row = c.execute("SELECT (SELECT MAX(seq) FROM updates WHERE session_id = ? AND ts <= ?), "
                    "(SELECT MAX(seq) FROM updates WHERE session_id = ?)", (session_id, at, session_id)).fetchone()
    return int(row[0] or 0), int(row[1] or 0)


def apply_change(c: sqlite3.Connection, change: SessionChange, lifetimes: Lifetimes) -> bool:
    """Row fields + events of one change inside the current transaction; False if the session is gone."""
    unknown = set(change.fields) - SESSION_FIELDS
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    if change.fields:
        assignments = ", ".join(f"{k} = ?" for k in change.fields)
        cur = c.execute(f"UPDATE sessions SET {assignments} WHERE id = ?", (*change.fields.values(), change.session_id))
        if cur.rowcount == 0:
            return False
        refresh_expiry(c, lifetimes, change.session_id)
    elif c.execute("SELECT 1 FROM sessions WHERE id = ?", (change.session_id,)).fetchone() is None:
        return False
    insert_events(c, change.events)
    return True


def insert_events(c: sqlite3.Connection, events: Sequence[EventRecord]) -> None:
    # Only for sessions that still exist: a "left" event racing a DELETE leaves no orphan row.
    c.executemany(
        "INSERT INTO events (session_id, ts, type, data) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?)",
        [(e.session_id, e.ts or time.time(), e.type, json.dumps(e.data, separators=(",", ":")), e.session_id) for e in events],
    )


SESSION_COLUMNS = ("id, title, language, status, created_at, updated_at, expires_at, keep_until, ended_at, "
                    "token_generation, locked, run_enabled")


def session_record(row: tuple[Any, ...]) -> SessionRecord:
    values = dict(zip(SESSION_COLUMNS.split(", "), row, strict=True))
    values["locked"], values["run_enabled"] = bool(values["locked"]), bool(values["run_enabled"])  # stored as 0/1
    return SessionRecord(**values)
