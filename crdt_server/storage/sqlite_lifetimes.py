"""The SQLite side of session lifetimes: ``expires_at`` derived from the row, the token generation.

Kept apart from ``sqlite.py`` (the write path) because both are small rules that any statement
changing a session row must apply inside its own transaction; the rule itself is
``crdt_server/lifetimes.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from ..lifetimes import Lifetimes

EXPIRY_COLUMNS = "id, status, keep_until, updated_at, ended_at, expires_at"  # what ``Lifetimes.stale`` reads


def refresh_expiry(c: sqlite3.Connection, lifetimes: Lifetimes, session_id: str | None = None) -> None:
    """Recompute ``expires_at`` of one session (or of all) from its row, by the one rule."""
    where, args = ("WHERE id = ?", (session_id,)) if session_id else ("", ())
    write_expiry(c, lifetimes, c.execute(f"SELECT {EXPIRY_COLUMNS} FROM sessions {where}", args).fetchall())


def write_expiry(c: sqlite3.Connection, lifetimes: Lifetimes, rows: Iterable[Sequence[Any]]) -> None:
    """Write back the ``expires_at`` of those rows (``EXPIRY_COLUMNS``, as read in this transaction)
    that no longer follow the rule; an append passes its UPDATE's RETURNING row and saves a SELECT."""
    c.executemany("UPDATE sessions SET expires_at = ? WHERE id = ?", lifetimes.stale(rows))


def next_generation(c: sqlite3.Connection, session_id: str) -> int | None:
    """Advance the session's token generation (revoking every token issued before); None if it is gone."""
    row = c.execute("UPDATE sessions SET token_generation = token_generation + 1 WHERE id = ? "
                    "RETURNING token_generation", (session_id,)).fetchone()
    return int(row[0]) if row else None


def refresh_all(c: sqlite3.Connection, lifetimes: Lifetimes) -> None:
    """At start: every row's ``expires_at`` by the current settings, in one transaction."""
    c.execute("BEGIN IMMEDIATE")
    try:
        refresh_expiry(c, lifetimes)
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise
