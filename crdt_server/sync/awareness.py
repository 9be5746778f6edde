"""A room's presence (awareness): who owns which clientID, bounded, validated, coalesced.

Why a module of its own: presence is client-controlled data that every other client parses and
every newcomer receives, so it needs the same care as the document (docs/websocket-protocol.md,
"Awareness" and "Limits"):

* **Ownership.** A clientID belongs to the live connection that introduced it; others' entries
  for it are dropped (y-websocket echoes every state it receives, so this is the common case,
  not an attack). A connection *of the same role* with a higher clock takes it over: a user who
  reconnects before the server noticed the old socket died keeps their cursor, and the old
  socket's eventual close no longer removes it.
* **Bounds.** ``PresenceLimits``: clientIDs per connection, bytes per state, bytes per room.
  An entry over a bound is dropped and the connection keeps working (a client at a limit by
  accident, e.g. several tabs sharing a BroadcastChannel); a connection whose refusals pass
  ``max_refused`` within 10 s is flooding and is closed (``PresenceFlood`` → 1008). Every entry
  costs parsing, even one silently ignored, so a connection's entries are also processed at most
  at ``entries_rate`` per second (bursts of 10 s): beyond, its socket is read more slowly.
* **Validation.** Every accepted state is JSON as ``JSON.parse`` reads it (y-protocols throws on
  the whole message otherwise); the bytes are kept as sent, only a ``null`` is normalised.
* **Cheap reads.** Each state is parsed once, on arrival; the participants list reads a cached
  summary, and newcomers get cached frames split under the message limit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .. import presence
from ..config import PRESENCE_FRAME_BYTES, PRESENCE_WORK_UNIT, Settings
from ..limits import TokenBuckets
from . import protocol as p
from .connection import wire_frame

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger(__name__)

ENTRY_COST = 32  # bytes a live entry counts beyond its state (ids, clock, bookkeeping)
TOMBSTONE_COST = 16  # a removed clientID's remembered clock
FLOOD_WINDOW = 10.0  # seconds over which max_refused refusals (and bursts of entries_rate) are allowed
WORK_UNIT = PRESENCE_WORK_UNIT  # entries per token of the entries_rate bucket
NULL = b"null"


MAX_REMOTE = 1000  # connections of other processes one room keeps presence of


class Owner(Protocol):
    """Who introduced a clientID: a ``Connection`` here, or a ``RemoteOwner``."""

    @property
    def id(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def connected_at(self) -> float: ...
    name: str | None
    client_ids: set[int]


@dataclass(eq=False)
class RemoteOwner:
    """A connection on another process (docs/design/cluster.md, "Presence"): its states arrive over
    the bus and go through the same checks as a local connection's."""

    instance: bytes
    id: str
    role: str
    connected_at: float
    name: str | None = None
    client_ids: set[int] = field(default_factory=set)
    heard: float = field(default_factory=time.monotonic)  # its process last spoke of it


Relay = Callable[["Connection", list[p.AwarenessEntry], bool], None]  # (who, accepted entries, left)


def _no_relay(conn: Connection, entries: list[p.AwarenessEntry], left: bool) -> None:
    return None


class PresenceFlood(Exception):
    """A connection's refused presence entries passed ``max_refused``: it is closed (1008)."""


@dataclass(frozen=True)
class PresenceLimits:
    # defaults are the settings' own (one definition: the Settings table)
    max_clients: int = Settings.presence_max_clients
    max_state_bytes: int = Settings.presence_max_state_bytes
    max_room_bytes: int = Settings.presence_max_room_bytes
    max_refused: int = Settings.presence_max_refused
    entries_rate: int = Settings.presence_entries_rate
    frame_bytes: int = PRESENCE_FRAME_BYTES  # largest presence message the server sends

    @classmethod
    def from_settings(cls, s: Settings) -> PresenceLimits:
        """The bounds from the settings (whose start-up checks make them consistent: ``config._cross_checks``)."""
        return cls(
            max_clients=s.presence_max_clients, max_state_bytes=s.presence_max_state_bytes,
            max_room_bytes=s.presence_max_room_bytes, max_refused=s.presence_max_refused,
            entries_rate=s.presence_entries_rate,
            frame_bytes=min(PRESENCE_FRAME_BYTES, s.max_message_size),
        )


@dataclass
class _Live:
    entry: p.AwarenessEntry
    owner: Owner
    summary: dict[str, Any]  # name/color/cursor, parsed once (the participants list reads it)
    announced: bool = False  # sent to anyone yet: a removal of an unannounced state need not be

    @property
    def cost(self) -> int:
        return len(self.entry.state) + ENTRY_COST


class RoomPresence:
    """The presence of one room; the room calls ``apply``, ``send_snapshot`` and ``remove``."""

    def __init__(
        self, clients: set[Connection], limits: PresenceLimits, interval: float,
        later: Callable[[float, Callable[[], None]], bool],
    ) -> None:
        self._clients = clients  # the room's live connections (the same set)
        self.limits = limits
        self._interval = interval
        self._later = later  # calls a function after a delay while the room runs (a loop timer, not a task); False if it does not
        self._live: dict[int, _Live] = {}
        self._tombstones: dict[int, int] = {}  # removed clientID -> clock, oldest first (echoes must not revive)
        self.bytes = 0  # counted against max_room_bytes: live states and tombstones
        self._out: dict[int, p.AwarenessEntry] = {}  # coalesced, not yet broadcast
        self._flush_scheduled = False
        self._snapshot: list[tuple[bytes, bytes]] | None = None  # cached (message, wire) for newcomers
        self._refusals = TokenBuckets(limits.max_refused / FLOOD_WINDOW, limits.max_refused, max_keys=10_000)
        self._log_limit = TokenBuckets(0.1, 3, max_keys=10_000)
        units = limits.entries_rate / WORK_UNIT
        self._work = TokenBuckets(units, int(units * FLOOD_WINDOW), max_keys=10_000)
        self.relay: Relay = _no_relay  # tells the other processes (the cluster sets it)
        self.remote: dict[tuple[bytes, str], RemoteOwner] = {}  # connections of other processes

    # -- reading ---------------------------------------------------------------------------
    def summaries(self, conn: Owner) -> list[dict[str, Any]]:
        """Cached summaries of the states a connection owns (oldest clientID first)."""
        return [self._live[c].summary for c in sorted(conn.client_ids) if c in self._live]

    def send_snapshot(self, conn: Connection) -> None:
        """Every live state, in messages under the frame limit (a newcomer sees everyone at once)."""
        if self._snapshot is None:
            for live in self._live.values():
                live.announced = True
            entries = [live.entry for live in self._live.values()]
            self._snapshot = [(f, wire_frame(f)) for f in p.awareness_frames(entries, self.limits.frame_bytes)]
        for message, wire in self._snapshot:
            conn.enqueue(message, wire)

    # -- writing ---------------------------------------------------------------------------
    def apply(self, conn: Connection, frame: bytes) -> float:
        """Apply one awareness message from ``conn`` and broadcast what was accepted; returns how
        many seconds to wait before reading this connection again (``entries_rate``)."""
        accepted: list[p.AwarenessEntry] = []
        refused: Counter[str] = Counter()
        seen: set[int] = set()
        count = 0
        try:
            for entry in p.iter_awareness(frame):
                count += 1
                if entry.client_id in seen:  # a client names each clientID once per message
                    reason: str | p.AwarenessEntry | None = "repeated clientID"
                else:
                    seen.add(entry.client_id)
                    reason = self._accept(conn, entry)
                if isinstance(reason, p.AwarenessEntry):
                    accepted.append(reason)
                elif reason is not None:
                    refused[reason] += 1
                    if self._refusals.take(conn.id):
                        raise PresenceFlood(f"more than {self.limits.max_refused} presence entries refused")
        finally:
            if refused and not self._log_limit.take(conn.id):
                log.warning("connection %s: presence entries dropped: %s", conn.id,
                            ", ".join(f"{n} × {r}" for r, n in refused.items()))
            if accepted:
                self._snapshot = None
                self._publish(accepted)
                self.relay(conn, accepted, False)
        for _ in range(count // WORK_UNIT + 1):
            wait = self._work.take(conn.id)
            if wait:
                return wait
        return 0.0

    def _accept(self, conn: Owner, entry: p.AwarenessEntry) -> p.AwarenessEntry | str | None:
        """The entry to broadcast, a refusal reason, or None for an entry silently ignored (an echo,
        an old clock, someone else's clientID)."""
        cid = entry.client_id
        live = self._live.get(cid)
        takeover = False
        if live is not None:
            if live.owner is not conn:
                if live.owner.role != conn.role or entry.clock <= live.entry.clock:
                    return None
                takeover = True
            elif entry.clock < live.entry.clock or (entry.clock == live.entry.clock and entry.state != NULL):
                return None
        elif entry.clock <= self._tombstones.get(cid, -1):
            return None
        if len(entry.state) > self.limits.max_state_bytes:
            return "state too large"
        if live is not None and not takeover and entry.state == live.entry.state:
            # A renewal: y-protocols sends its unchanged state again every 15 s (most presence
            # traffic of an idle room). Checked, sized and summarised when it was first accepted.
            live.entry = entry
            conn.name = live.summary["name"] or conn.name  # as below: the state renewed names the author
            return entry
        try:
            value = presence.parse_client_json(entry.state)
        except ValueError:
            return "not JSON"
        if value is None:
            return self._remove_one(cid, entry.clock) if live is not None else None
        if (live is None or takeover) and len(conn.client_ids) >= self.limits.max_clients:
            return "too many clientIDs"
        cost = len(entry.state) + ENTRY_COST
        if not self._fits(cost - (live.cost if live is not None else 0)):
            return "room presence full"
        if live is None:
            self._forget_tombstone(cid)
            live = self._live[cid] = _Live(entry, conn, {})
        else:
            self.bytes -= live.cost
            if takeover:
                live.owner.client_ids.discard(cid)
                live.owner = conn
            live.entry = entry
        self.bytes += cost
        conn.client_ids.add(cid)
        live.summary = presence.state_summary(value)
        # Remembered on the connection: the update log and the "left" event name the author even
        # after a graceful leave has removed the state.
        conn.name = live.summary["name"] or conn.name
        return entry

    def _fits(self, extra: int) -> bool:
        """Whether ``extra`` more bytes fit the room, forgetting the oldest tombstones if need be."""
        while extra > 0 and self.bytes + extra > self.limits.max_room_bytes and self._tombstones:
            self._forget_tombstone(next(iter(self._tombstones)))
        return extra <= 0 or self.bytes + extra <= self.limits.max_room_bytes

    def _forget_tombstone(self, cid: int) -> None:
        if self._tombstones.pop(cid, None) is not None:
            self.bytes -= TOMBSTONE_COST

    def _remove_one(self, cid: int, clock: int) -> p.AwarenessEntry | None:
        """Remove a live state; the removal to broadcast, or None if nobody was ever sent the state."""
        live = self._live.pop(cid)
        live.owner.client_ids.discard(cid)
        self.bytes -= live.cost
        if self._fits(TOMBSTONE_COST):
            self._tombstones[cid] = clock
            self.bytes += TOMBSTONE_COST
        self._snapshot = None
        if not live.announced:
            self._out.pop(cid, None)
            return None
        return p.AwarenessEntry(cid, clock, NULL)

    def remove(self, conn: Owner) -> None:
        """``conn`` is gone: tell the others its clients left (same clock, null state, as the reference
        server does, so a client that reconnects is accepted at its next renewal)."""
        if not isinstance(conn, RemoteOwner):
            self.relay(conn, [], True)  # type: ignore[arg-type]  # a local Owner is a Connection
        removed = [
            gone for cid in sorted(conn.client_ids)
            if (live := self._live.get(cid)) is not None and live.owner is conn
            and (gone := self._remove_one(cid, live.entry.clock)) is not None
        ]
        conn.client_ids.clear()
        for gone in removed:
            self._out.pop(gone.client_id, None)
        if removed:
            self._broadcast(removed)
        if not self._clients and not self.remote:
            self._live.clear()
            self._tombstones.clear()
            self._out.clear()
            self.bytes = 0
            self._snapshot = None

    # -- other processes (docs/design/cluster.md, "Presence") -----------------------------------
    def apply_remote(self, owner: RemoteOwner, frame: bytes, left: bool) -> None:
        """States of a connection on another process: checked like a local one's (``_accept``),
        relayed to this process's sockets; ``left``: it is gone."""
        key = (owner.instance, owner.id)
        known = self.remote.get(key)
        if left:
            if known is not None:
                del self.remote[key]
                self.remove(known)
            return
        if known is None:
            if len(self.remote) >= MAX_REMOTE:
                return
            known = self.remote[key] = owner
        known.heard = time.monotonic()
        accepted = []
        try:
            for entry in p.iter_awareness(frame) if frame else ():
                reason = self._accept(known, entry)
                if isinstance(reason, p.AwarenessEntry):
                    accepted.append(reason)
        except p.ProtocolError:
            log.warning("presence from another process dropped: malformed")
        if accepted:
            self._snapshot = None
            self._publish(accepted)

    def joined(self, conn: Connection) -> None:
        """A connection opened here: the other processes list it (participants) before it has presence."""
        self.relay(conn, [], False)

    def drop_instance(self, instance: bytes, unheard_since: float | None = None) -> None:
        """A process died: its connections leave, as if each had closed. With ``unheard_since``, only
        those it did not mention since (it answered a query: the others closed while a message was lost)."""
        for key in [k for k, o in self.remote.items() if k[0] == instance
                    and (unheard_since is None or o.heard < unheard_since)]:
            self.remove(self.remote.pop(key))

    def local_states(self) -> dict[Connection, list[p.AwarenessEntry]]:
        """This process's connections and their live states (answering another process's query)."""
        out: dict[Connection, list[p.AwarenessEntry]] = {c: [] for c in self._clients}
        for live in self._live.values():
            if not isinstance(live.owner, RemoteOwner):
                out.setdefault(live.owner, []).append(live.entry)  # type: ignore[arg-type]
        return out

    # -- broadcasting ----------------------------------------------------------------------
    def _publish(self, entries: list[p.AwarenessEntry]) -> None:
        """Relay at once (interval 0) or coalesce: one broadcast per room per interval with the newest
        entry per client. Presence, not edits, dominates CPU in big rooms (every cursor move goes to
        everyone); 200 clients at 1 Hz become at most 1/interval messages per second per recipient."""
        if self._interval <= 0:
            self._broadcast(entries)
            return
        for entry in entries:
            self._out[entry.client_id] = entry
        if not self._flush_scheduled and self._later(self._interval, self._flush):
            self._flush_scheduled = True

    def _flush(self) -> None:
        self._flush_scheduled = False
        entries = list(self._out.values())
        self._out.clear()
        if entries:
            self._broadcast(entries)

    def _broadcast(self, entries: Iterable[p.AwarenessEntry]) -> None:
        """To every connection, the sender included: the echo keeps a lone client's connection alive."""
        batch = list(entries)
        for entry in batch:
            live = self._live.get(entry.client_id)
            if live is not None and live.entry is entry:
                live.announced = True
        for frame in p.awareness_frames(batch, self.limits.frame_bytes):
            wire = wire_frame(frame)
            for conn in self._clients:
                conn.enqueue(frame, wire)
