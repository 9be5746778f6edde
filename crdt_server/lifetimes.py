"""How long a session lives: the one rule behind ``expiresAt``, the sweeper and token validity.

Interviews are scheduled days ahead and reviewed weeks later, so a session is never deleted before
the time its creator asked for (``keep_until``, the requested ``expiresAt``; the creation time when
none was given). After that an active session is deleted ``session_ttl`` seconds after its last
activity, and an ended one ``ended_retention`` seconds after it ended. The store recomputes
``expires_at`` with this rule inside every transaction that changes the row (and for every row at
start, so the column follows the current settings); tokens carry no moving expiry: they are valid
while the session exists and their generation is current.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .config import Settings


class InvalidExpiry(ValueError):
    """A requested ``expiresAt`` that is not in the future or beyond ``--session-max-lifetime``."""


@dataclass(frozen=True)
class Lifetimes:
    # defaults are the settings' own (one definition: the Settings table)
    session_ttl: float = Settings.session_ttl
    ended_retention: float = Settings.ended_retention
    max_lifetime: float = Settings.session_max_lifetime

    @classmethod
    def from_settings(cls, settings: Settings) -> Lifetimes:
        return cls(settings.session_ttl, settings.ended_retention, settings.session_max_lifetime)

    def expires_at(self, *, status: str, keep_until: float, updated_at: float, ended_at: float | None) -> float:
        """When the session will be deleted, given its row as it is now."""
        if status == "ended":
            since = updated_at if ended_at is None else ended_at
            return max(keep_until, since + self.ended_retention)
        return max(keep_until, updated_at + self.session_ttl)

    def stale(self, rows: Iterable[Sequence[Any]]) -> list[tuple[float, str]]:
        """(new expires_at, id) of the rows (id, status, keep_until, updated_at, ended_at, expires_at)
        whose stored expires_at no longer follows the rule: what a store writes back."""
        changed = []
        for sid, status, keep_until, updated_at, ended_at, old in rows:
            new = self.expires_at(status=status, keep_until=keep_until, updated_at=updated_at, ended_at=ended_at)
            if new != old:
                changed.append((new, sid))
        return changed

    def requested(self, expires_at: float | None, now: float) -> float:
        """The ``keep_until`` of a new session: the requested time, checked, or ``now``."""
        if expires_at is None:
            return now
        if not math.isfinite(expires_at) or expires_at <= now:
            raise InvalidExpiry("must be a time in the future (Unix seconds)")
        if expires_at > now + self.max_lifetime:
            raise InvalidExpiry(f"at most --session-max-lifetime ({self.max_lifetime:g} s) from now")
        return expires_at
