"""The storage interface the sync layer and the service depend on.

Kept narrow on purpose (append updates -> sequence numbers, read after S, latest snapshot,
write snapshot, sessions, events) so another backend can be added without touching the sync
layer; the design and its reasons are in docs/design/storage.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# A document this small is loaded and rebuilt on the event loop (well under a millisecond) instead of
# in worker threads: each hop to a thread and back costs about 150 µs of CPU, and loading a room took
# three of them — the most of a WebSocket connect after a restart (bench/RESULTS.md, "connect").
SMALL_LOAD_ROWS = 32  # updates after the snapshot (each is applied in its own transaction)
SMALL_LOAD_BYTES = 64 * 1024  # snapshot + those updates


def small_load(rows: int, size: int) -> bool:
    return rows <= SMALL_LOAD_ROWS and size <= SMALL_LOAD_BYTES


@dataclass(frozen=True)
class SessionRecord:
    id: str
    title: str
    language: str
    status: str
    created_at: float
    updated_at: float
    expires_at: float  # derived by the store from the fields below (``crdt_server/lifetimes.py``)
    keep_until: float = 0.0  # never deleted before this: the requested expiresAt
    ended_at: float | None = None
    token_generation: int = 0  # tokens of another generation are revoked
    locked: bool = False  # the candidate may not edit the code
    run_enabled: bool = True  # the candidate may run the session


@dataclass(frozen=True)
class UpdateRecord:
    """One accepted client update. ``origin`` names the authenticated connection, not the Yjs clientID."""

    session_id: str
    data: bytes
    role: str
    conn_id: str
    name: str = ""
    seq: int = 0
    ts: float = 0.0


@dataclass(frozen=True)
class EventRecord:
    session_id: str
    type: str
    data: dict[str, Any]
    seq: int = 0
    ts: float = 0.0


@dataclass(frozen=True)
class SessionChange:
    """Session row fields and history events that commit in one transaction (with updates, or alone)."""

    session_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[EventRecord, ...] = ()


MAIN_DOC, NOTES_DOC = "main", "notes"  # a session's documents: the shared one, the interviewer's notes
SESSION_FIELDS = frozenset({"title", "language", "status", "updated_at", "ended_at", "locked", "run_enabled"})  # expires_at follows them


class StoreClosed(RuntimeError):
    """The store was closed; nothing more is written."""


class SessionNotFound(LookupError):
    """No such session: never created, deleted, or expired."""


class SessionGone(SessionNotFound):
    """The session was deleted while an operation on it was queued."""


class StorageUnavailable(RuntimeError):
    """The database failed (disk full, I/O error, locked): the request may succeed later (503)."""


class DocumentTooLarge(ValueError):
    """A write would take the session's document past ``--max-document-size``: refused for good (413, 4413)."""


class StorageQuotaExceeded(DocumentTooLarge):
    """A write would take the session's stored bytes (log + snapshots) past ``--session-storage-quota``."""


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...

    # sessions
    async def create_session(self, session: SessionRecord, initial_update: bytes, event: EventRecord) -> None: ...
    async def get_session(self, session_id: str) -> SessionRecord | None: ...
    async def list_sessions(self, after: int, limit: int) -> list[tuple[int, SessionRecord]]:
        """Sessions in creation order after the cursor ``after``: (cursor, session) pairs."""
        ...
    async def change_session(self, change: SessionChange) -> SessionRecord | None:
        """Apply row fields and append events in one transaction; None if the session does not exist."""
        ...
    async def delete_session(self, session_id: str) -> bool: ...
    async def reissue_tokens(self, session_id: str, event: EventRecord) -> int | None:
        """Advance the token generation and record ``event`` in one transaction; the new generation,
        or None if the session does not exist."""
        ...
    async def expired_sessions(self, now: float) -> list[str]: ...

    # the update log (write-ahead: append returns once committed)
    # ``doc`` names one of a session's documents (``MAIN_DOC``, ``NOTES_DOC``): each has its own log.
    async def append_updates(
        self, updates: Sequence[UpdateRecord], changes: Sequence[SessionChange] = (), doc: str = MAIN_DOC
    ) -> list[int]:
        """Commit the updates (and the changes that belong with them) in one transaction.

        Returns their per-session sequence numbers in commit order; ``SessionGone`` if a session
        no longer exists."""
        ...
    async def load(self, session_id: str, doc: str = MAIN_DOC) -> tuple[bytes | None, list[UpdateRecord], int]:
        """(snapshot state or None, updates after it in sequence order, snapshot's seq), read in one
        consistent transaction: it reflects exactly the rows up to ``tail[-1].seq`` (else the
        snapshot's seq), none committed later."""
        ...
    async def write_snapshot(self, session_id: str, seq: int, state: bytes, doc: str = MAIN_DOC) -> None: ...
    async def read_updates(self, session_id: str, after: int, limit: int, doc: str = MAIN_DOC) -> list[UpdateRecord]:
        """Rows with ``seq > after`` in sequence order, at most ``limit``: what a reader at ``after`` missed."""
        ...
    async def last_seqs(self, session_ids: Sequence[str], doc: str = MAIN_DOC) -> dict[str, int]:
        """Each session's newest sequence number in one query (a session that is gone is absent)."""
        ...

    # playback (read-only; docs/playback.md)
    async def playback_rows(self, session_id: str, seq: int) -> tuple[bytes | None, int, list[UpdateRecord]]:
        """(newest snapshot at or before ``seq`` or None, its seq or 0, the rows after it up to ``seq``)."""
        ...
    async def seq_at(self, session_id: str, at: float) -> tuple[int, int]:
        """(last seq committed at or before unix time ``at``, 0 if none; the session's last seq)."""
        ...

    # events
    async def append_events(self, events: Sequence[EventRecord]) -> None: ...
    async def read_events(self, session_id: str, after: int, limit: int) -> list[EventRecord]: ...
