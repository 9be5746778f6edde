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
from .sqlite import SQLiteStore

if TYPE_CHECKING:  # a type only: config imports nothing from here
    from ..config import Settings

__all__ = [
    "EventRecord", "SQLiteStore", "SessionChange", "SessionGone", "SessionNotFound", "SessionRecord", "Store", "StoreClosed",
    "UpdateRecord", "open_store", "DocumentTooLarge", "StorageQuotaExceeded", "StorageUnavailable",
]


def open_store(settings: Settings) -> SQLiteStore:
    """The one place that picks a backend from the settings."""
    return SQLiteStore(settings.sqlite_path, durability=settings.durability, lifetimes=Lifetimes.from_settings(settings),
                       session_quota=settings.session_storage_quota,
                       checkpoint_every=settings.playback_checkpoint_every)
