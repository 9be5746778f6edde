"""How every room behaves (``RoomOptions``), built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .awareness import PresenceLimits

if TYPE_CHECKING:
    from ..config import Settings


@dataclass(frozen=True)
class RoomOptions:
    """How every room behaves; built once from the settings (``from_settings``)."""

    grace: float  # seconds an empty room stays loaded
    snapshot_every: int  # updates between snapshots
    persist: bool  # False: --persistence off
    presence_interval: float  # presence coalescing window (0 = relay at once)
    max_pending: int  # updates ahead of their commit before a socket stops being read
    editor_events: int = 100  # history events one connection's edits may cause (reverts, language switches)
    presence: PresenceLimits = PresenceLimits()  # bounds of a room's presence
    max_document_size: int = 0  # encoded state bytes a write may not take the document past (0 = no limit)

    @classmethod
    def from_settings(cls, s: Settings) -> RoomOptions:
        return cls(
            grace=s.room_grace, snapshot_every=s.snapshot_every, persist=s.persistence == "write-ahead",
            presence_interval=s.presence_interval, max_pending=s.room_pending_updates,
            editor_events=s.editor_events_per_connection,
            presence=PresenceLimits.from_settings(s),
            max_document_size=s.max_document_size,
        )
