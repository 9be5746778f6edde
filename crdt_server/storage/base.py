"""The storage interface the sync layer and the API depend on.

Kept narrow on purpose (append updates -> sequence numbers, read after S, latest snapshot,
write snapshot, sessions, events) so a PostgreSQL backend can be added without touching
the sync layer; see ../shared/design/storage.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class SessionRecord:
    id: str
    title: str
    language: str
    status: str
    created_at: float
    updated_at: float
    expires_at: float


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


class StoreClosed(RuntimeError):
    """The store was closed; nothing more is written."""


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...

    # sessions
    async def create_session(self, session: SessionRecord, initial_update: bytes, event: EventRecord) -> None: ...
    async def get_session(self, session_id: str) -> SessionRecord | None: ...
    async def update_session(self, session_id: str, **fields: Any) -> SessionRecord | None: ...
    async def delete_session(self, session_id: str) -> bool: ...
    async def expired_sessions(self, now: float) -> list[str]: ...

    # the update log (write-ahead: append returns once committed)
    async def append_updates(self, updates: list[UpdateRecord]) -> list[int]: ...
    async def load(self, session_id: str) -> tuple[bytes | None, list[UpdateRecord], int]:
        """(snapshot state or None, updates after it in sequence order, snapshot's seq)."""
        ...
    async def write_snapshot(self, session_id: str, seq: int, state: bytes) -> None: ...
    async def read_updates(self, session_id: str, after: int, limit: int) -> list[UpdateRecord]: ...

    # events
    async def append_events(self, events: list[EventRecord]) -> None: ...
    async def read_events(self, session_id: str, after: int, limit: int) -> list[EventRecord]: ...
