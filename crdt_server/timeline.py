"""Who typed what and when: the per-participant timeline, replayed from the update log.

Why a replay and not update sizes: a reconnect's SyncStep2 resends content the server already has,
and an update's bytes say nothing of code points. Each row is applied in its own transaction and the
transaction's own update is read: it holds only what the document integrated (a duplicate yields an
empty one) and the IDs it newly deleted, like ``Text.observe``'s delta. Not the delta itself: yrs
computes it by walking the whole text (about 60 µs per update on a 10,000-character document, six
times this), and its offsets are UTF-8 bytes. Deleted IDs are mapped to code points through the
strings inserted before. The log is append-only, so a cached replay only applies the rows added
since (per session, bounded), off the event loop.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from pycrdt import Doc

from .document import TEXT
from .domain import EventType
from .storage import EventRecord, Store, UpdateRecord
from .sync.protocol import ProtocolError, is_crdt_failure
from .sync.updates import IdIndex, decode

SERVER_ROLE = "server"
PASTE = "paste"
CHUNK = 5000  # log rows (or events) read per query
LOCK_CHANGED = "lock_changed"  # recorded by the lock, when present
# history events shown on the timeline (joins and leaves name a connection)
SHOWN = frozenset({EventType.PARTICIPANT_JOINED, EventType.PARTICIPANT_LEFT, EventType.LANGUAGE_CHANGED,
                   EventType.RUN_FINISHED, EventType.CODE_SAVED, LOCK_CHANGED})
_CODE = (TEXT, None)  # the place (root, key) of the code text


def _code_points(text: str, start: int, end: int) -> int:
    """Code points of ``text`` between two UTF-16 offsets (Yjs clocks count UTF-16 units)."""
    return len(text.encode("utf-16-le", "surrogatepass")[2 * start:2 * end].decode("utf-16-le", "ignore"))


@dataclass
class _Row:
    ts: float
    role: str
    conn_id: str
    name: str
    inserted: int
    deleted: int


@dataclass
class Replay:
    """The replayed log of one session up to ``last_seq``, with what each row changed in the text."""

    threshold: int
    doc: Doc[Any] = field(default_factory=Doc)
    index: IdIndex = field(default_factory=IdIndex)  # where each ID lives (the text, meta, runs)
    last_seq: int = 0
    start: float | None = None
    end: float | None = None
    rows: list[_Row] = field(default_factory=list)  # rows of participants that changed the text
    pastes: list[dict[str, Any]] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    last_event: int = 0
    run_by: dict[str, str] = field(default_factory=dict)  # runId -> role that started it
    # connection -> the Yjs clientIDs its edits came from: a reconnect whose presence the server took
    # for a duplicate has no name, but the same page keeps its clientID
    clients: dict[str, set[int]] = field(default_factory=dict)
    # per Yjs client: the strings inserted into the text, (start clock, end clock, text), sorted
    _starts: dict[int, list[int]] = field(default_factory=dict)
    _strings: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    built: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self._updates: list[bytes] = []
        self._sub = self.doc.observe(lambda e: self._updates.append(e.update))

    def apply(self, records: Sequence[UpdateRecord]) -> None:
        """Apply rows (in seq order, after ``last_seq``), each in its own transaction, and count what each
        added to the text and removed from it."""
        with self.lock:
            self._apply(records)

    def _apply(self, records: Sequence[UpdateRecord]) -> None:
        for r in records:
            if r.seq <= self.last_seq:
                continue
            self.last_seq = r.seq
            self.start = r.ts if self.start is None else self.start
            self.end = r.ts
            self._updates.clear()
            try:
                with self.doc.transaction(origin=r.conn_id):
                    self.doc.apply_update(r.data)
            except BaseException as exc:
                if not is_crdt_failure(exc):
                    raise
                continue  # stored but refused by the CRDT library, as when the room loads it
            inserted = deleted = 0
            for update in self._updates:
                i, d = self._count(update)
                inserted += i
                deleted += d
            if r.role == SERVER_ROLE or not (inserted or deleted):
                continue
            self.rows.append(_Row(r.ts, r.role, r.conn_id, r.name, inserted, deleted))
            if r.conn_id not in self.clients or not r.name:
                try:
                    found = {s.client for s in decode(r.data).structs}
                except ProtocolError:
                    found = set()
                self.clients.setdefault(r.conn_id, set()).update(found)
            if inserted > self.threshold:
                self.pastes.append({"ts": r.ts, "seq": r.seq, "role": r.role, "conn_id": r.conn_id,
                                    "name": r.name, "length": inserted})

    def _count(self, update: bytes) -> tuple[int, int]:
        """(inserted, deleted) code points of the text in one transaction's update: what it integrated
        (never what the document had already) and what it newly deleted, mapped through the strings
        inserted earlier (delete ranges count UTF-16 units)."""
        try:
            decoded = decode(update)
        except ProtocolError:  # yrs wrote it: not expected; count nothing rather than fail the timeline
            return 0, 0
        inserted = deleted = 0
        for s, place in self.index.places(decoded):
            if s.text is not None and place == _CODE:
                inserted += len(s.text)
                starts = self._starts.setdefault(s.client, [])
                i = bisect.bisect_left(starts, s.clock)
                starts.insert(i, s.clock)
                self._strings.setdefault(s.client, []).insert(i, (s.clock, s.end, s.text))
        self.index.record(decoded)
        for client, clock, length in decoded.deletes:
            if not self._starts.get(client):
                continue
            end = clock + length
            strings = self._strings[client]
            i = max(0, bisect.bisect_right(self._starts[client], clock) - 1)
            while i < len(strings) and strings[i][0] < end:
                a, b, text = strings[i]
                lo, hi = max(a, clock), min(b, end)
                if lo < hi:
                    deleted += hi - lo if len(text) == b - a else _code_points(text, lo - a, hi - a)
                i += 1
        return inserted, deleted

    def add_events(self, events: Sequence[EventRecord]) -> None:
        with self.lock:
            self._add_events(events)

    def _add_events(self, events: Sequence[EventRecord]) -> None:
        for e in events:
            if e.seq <= self.last_event:
                continue
            self.last_event = e.seq
            if e.type == EventType.RUN_STARTED and isinstance(e.data.get("runId"), str):
                self.run_by[e.data["runId"]] = str(e.data.get("by", ""))
            if e.type in SHOWN:
                self.events.append(e)


async def caught_up(store: Store, sid: str, replay: Replay) -> Replay:
    """The replay with the log rows and history events added since it was last used (each chunk in a
    worker thread: a long log takes a good part of a second)."""
    while rows := await store.read_updates(sid, replay.last_seq, CHUNK):
        await anyio.to_thread.run_sync(replay.apply, rows)
        if len(rows) < CHUNK:
            break
    while events := await store.read_events(sid, replay.last_event, CHUNK):
        await anyio.to_thread.run_sync(replay.add_events, events)  # its lock may be held by a replay
        if len(events) < CHUNK:
            break
    return replay


async def answer(replay: Replay, bucket: int, live_names: Mapping[str, str]) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(build, replay, bucket, live_names)


def build(replay: Replay, bucket: int, live_names: Mapping[str, str]) -> dict[str, Any]:
    """The timeline answer from a replay (cached until the log, the events or ``bucket`` change)."""
    with replay.lock:
        key = (replay.last_seq, replay.last_event, bucket, frozenset(live_names.items()))
        if replay.built is not None and replay.built[0] == key:
            return replay.built[1]
        result = _build(replay, bucket, live_names)
        replay.built = (key, result)
        return result


def _build(replay: Replay, bucket: int, live_names: Mapping[str, str]) -> dict[str, Any]:
    """Participants with totals and bucketed points, and the events, from a replay."""
    names = _connection_names(replay, live_names)
    people: dict[tuple[str, str], dict[str, Any]] = {}
    conn_of: dict[str, str] = {}

    def person(role: str, conn_id: str, name: str, ts: float) -> dict[str, Any]:
        key = (role, name or names.get(conn_id, ""))
        p = people.get(key)
        if p is None:
            p = people[key] = {"id": f"p{len(people) + 1}", "role": role, "name": key[1] or None, "inserted": 0,
                               "deleted": 0, "connections": set(), "buckets": {}, "first": ts}
        p["connections"].add(conn_id)
        conn_of[conn_id] = p["id"]
        return p

    start = replay.start or 0.0
    for e in replay.events:  # joins first, so ids follow arrival; a connection not named yet waits
        cid = e.data.get("connectionId")
        if e.type == EventType.PARTICIPANT_JOINED and isinstance(cid, str) and names.get(cid):
            person(str(e.data.get("role", "")), cid, "", e.ts)
    for row in replay.rows:
        p = person(row.role, row.conn_id, row.name, row.ts)
        p["inserted"] += row.inserted
        p["deleted"] += row.deleted
        b = int((row.ts - start) // bucket)
        ins, dels = p["buckets"].get(b, (0, 0))
        p["buckets"][b] = (ins + row.inserted, dels + row.deleted)
    events: list[dict[str, Any]] = []
    for e in replay.events:
        cid = e.data.get("connectionId")
        if isinstance(cid, str) and cid not in conn_of and e.type == EventType.PARTICIPANT_LEFT:
            person(str(e.data.get("role", "")), cid, str(e.data.get("name") or ""), e.ts)
        data = dict(e.data)
        if e.type == EventType.RUN_FINISHED and data.get("runId") in replay.run_by:
            data["by"] = replay.run_by[data["runId"]]
        events.append({"ts": e.ts, "type": str(e.type), "participant": conn_of.get(cid) if isinstance(cid, str) else None,
                       "data": data})
    for paste in replay.pastes:
        p = person(paste["role"], paste["conn_id"], paste["name"], paste["ts"])
        events.append({"ts": paste["ts"], "type": PASTE, "participant": p["id"],
                       "data": {"length": paste["length"], "seq": paste["seq"]}})
    events.sort(key=lambda ev: ev["ts"])
    last_event = max((e.ts for e in replay.events), default=start)
    participants = [
        {"id": p["id"], "role": p["role"], "name": p["name"], "inserted": p["inserted"], "deleted": p["deleted"],
         "connections": len(p["connections"]),
         "points": [[start + b * bucket, i, d] for b, (i, d) in sorted(p["buckets"].items())]}
        for p in people.values()
    ]
    return {"start": start, "end": max(replay.end or start, last_event), "bucket": bucket,
            "participants": participants, "events": events}


def _connection_names(replay: Replay, live: Mapping[str, str]) -> dict[str, str]:
    """The display name each connection announced: its first named row, else its leave event, else live."""
    names: dict[str, str] = {}
    for row in replay.rows:
        if row.name:
            names.setdefault(row.conn_id, row.name)
    for e in replay.events:
        if e.type == EventType.PARTICIPANT_LEFT and e.data.get("name"):
            names.setdefault(str(e.data.get("connectionId")), str(e.data["name"]))
    for cid, name in live.items():
        if name:
            names.setdefault(cid, name)
    roles = {row.conn_id: row.role for row in replay.rows}
    for cid, clients in replay.clients.items():
        if cid not in names and clients:
            same = [names[other] for other, theirs in replay.clients.items()
                    if other in names and roles.get(other) == roles.get(cid) and clients & theirs]
            if same:
                names[cid] = same[0]
    return names


class Timelines:
    """Replays per session, least recently used dropped first (``size`` sessions kept)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._replays: OrderedDict[str, Replay] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str, threshold: int) -> Replay:
        with self._lock:
            replay = self._replays.pop(session_id, None)
            if replay is None or replay.threshold != threshold:
                replay = Replay(threshold)
            self._replays[session_id] = replay
            while len(self._replays) > self.size:
                self._replays.popitem(last=False)
            return replay

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._replays.pop(session_id, None)
