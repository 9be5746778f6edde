"""Storage: sessions, the Yjs update log, snapshots and events behind one narrow interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lifetimes import Lifetimes
from .base import (
    DocumentTooLarge,
    EventRecord,
    SessionChange,
    SessionGone,
    SessionNotFound,
    SessionRecord,
    StorageQuotaExceeded,
    StorageUnavailable,
    Store,
    StoreClosed,
    UpdateRecord,
)
from .postgres import PostgresStore
from .sqlite import SQLiteStore

if TYPE_CHECKING:  # a type only: config imports nothing from here
    from ..config import Settings

__all__ = [
    "EventRecord", "PostgresStore", "SQLiteStore", "SessionChange", "SessionGone", "SessionNotFound", "SessionRecord", "Store", "StoreClosed",
    "UpdateRecord", "open_store", "DocumentTooLarge", "StorageQuotaExceeded", "StorageUnavailable",
]


def open_store(settings: Settings) -> SQLiteStore | PostgresStore:
    """The one place that picks a backend from the settings."""
    if settings.postgres:
        return PostgresStore(settings.database_url, schema=settings.database_schema,
                             lifetimes=Lifetimes.from_settings(settings), session_quota=settings.session_storage_quota,
                             checkpoint_every=settings.playback_checkpoint_every,
                             pool_size=settings.database_pool_size, timeout=settings.database_timeout)
    return SQLiteStore(settings.sqlite_path, durability=settings.durability, lifetimes=Lifetimes.from_settings(settings),
                       session_quota=settings.session_storage_quota,
                       checkpoint_every=settings.playback_checkpoint_every)
