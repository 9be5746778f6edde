"""Storage: sessions, the Yjs update log, snapshots and events behind one narrow interface."""

from .base import EventRecord, SessionRecord, Store, UpdateRecord
from .sqlite import SQLiteStore

__all__ = ["EventRecord", "SessionRecord", "Store", "UpdateRecord", "SQLiteStore", "open_store"]


def open_store(settings) -> Store:  # type: ignore[no-untyped-def]
    """The one place that picks a backend from the settings."""
    return SQLiteStore(settings.sqlite_path, durability=settings.durability, session_ttl=settings.session_ttl)
