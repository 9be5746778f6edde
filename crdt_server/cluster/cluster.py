"""Several processes serving the same sessions: the bus wired into the rooms and the service.

PostgreSQL is the truth and the log; Redis only carries hints (docs/design/cluster.md). This
module turns room commits and session changes into bus messages and bus messages back into room
and service actions, and runs the safety nets that make a lost message harmless:

* every (re)subscribe: each loaded room reads the rows it lacks from the database;
* every ``--redis-check-interval``: the newest row of every loaded session, in one query per
  document kind, against what the room holds (a lost *last* message reveals no hole); a session
  that is gone is closed here too (a lost delete).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio

from ..config import PRESENCE_FRAME_BYTES
from ..storage import PostgresStore
from ..storage.base import MAIN_DOC, NOTES_DOC
from ..sync import protocol as p
from ..sync.follow import BusState
from ..sync.protocol import CloseCode
from ..sync.server import notes_room
from .bus import RedisBus
from .messages import MAX_MESSAGE, Action, BadMessage, Kind, Message, bus_key, decode, encode, peek_session
from .presence import PresenceBridge

if TYPE_CHECKING:
    from ..config import Settings
    from ..service import SessionService
    from ..storage.pg_instance import InstanceLock
    from ..sync.connection import Connection
    from ..sync.follow import Following

log = logging.getLogger(__name__)

PUBLISH_BYTES = 1024 * 1024  # rows per UPDATE message up to this; a bigger row travels as a HEAD hint
ACTIONS = {"drop": Action.DROP, "row": Action.ROW, "tokens": Action.TOKENS}
REASONS = {CloseCode.SESSION_EXPIRED: "session expired"}
REFUSED_LOG_EVERY = 60.0  # seconds between warnings about refused bus messages


class Cluster:
    """The ``Peers`` of every room when ``--redis-url`` is set (see the module docstring)."""

    follows = True

    def __init__(self, settings: Settings, secret: str, service: SessionService,
                 lock: InstanceLock | None = None) -> None:
        self.instance = os.urandom(8)
        self.service = service
        self.rooms = service.rooms
        self.check_interval = settings.redis_check_interval
        self.key = bus_key(secret, settings.redis_prefix)
        self.bus = RedisBus(settings.redis_url, settings.redis_prefix, self.instance, timeout=settings.redis_timeout,
                            check_interval=settings.redis_check_interval,
                            instance_ttl=settings.presence_timeout / 2)
        self.bus.on_message = self.on_message
        self.presence_check = min(settings.redis_check_interval, settings.presence_timeout / 5)
        self.bridge = PresenceBridge(self.bus, self._publish, settings.redis_timeout,
                                     min(PRESENCE_FRAME_BYTES, settings.max_message_size))
        self.bus.on_subscribed = self.on_subscribed
        self.lock, self.presence_timeout = lock, settings.presence_timeout
        if lock is not None:  # the others compare it with the holders of the instance lock
            self.bus.member = lambda: str(lock.pid or 0).encode()
        self._strangers: dict[int, float] = {}  # lock holders not on this bus -> since when (or -1: reported)
        self._buffers: dict[str, list[tuple[int, bytes]]] = {}
        self._held: dict[str, list[Message]] = {}  # CONTROL and HEAD messages that arrived while their room loaded
        self._rows_read = anyio.Lock()  # re-reads of session rows in message order (a lock then an unlock)
        self._tg: anyio.abc.TaskGroup | None = None
        self.refused = 0  # messages that failed their checks (bad tag, malformed)
        self._refused_logged = (-REFUSED_LOG_EVERY, 0)  # (when, ``refused`` then): one warning per period
        self._absent: set[str] = set()  # sessions the last head check did not find

    @property
    def state(self) -> BusState:
        return "ok" if self.bus.ready else "down"

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self.bus.run)
            tg.start_soon(self._check_heads)
            tg.start_soon(self._check_presence)
            tg.start_soon(self._check_members)

    # -- Peers: what the rooms and the service tell the others --------------------------------------
    def committed(self, room: Following, rows: list[tuple[int, bytes]]) -> None:
        chunk: list[tuple[int, bytes]] = []
        size = 0
        for seq, data in rows:
            if len(data) > PUBLISH_BYTES:  # too big for a message: peers read it from the database
                self._publish(Message(Kind.HEAD, self.instance, room.session_id, room.doc_key, seq=seq))
                continue
            if size + len(data) > PUBLISH_BYTES:
                self._publish(Message(Kind.UPDATE, self.instance, room.session_id, room.doc_key, rows=tuple(chunk)))
                chunk, size = [], 0
            chunk.append((seq, data))
            size += len(data) + 12
        if chunk:
            self._publish(Message(Kind.UPDATE, self.instance, room.session_id, room.doc_key, rows=tuple(chunk)))

    @contextmanager
    def buffering(self, name: str) -> Iterator[list[tuple[int, bytes]]]:
        early = self._buffers[name] = []
        held = self._held[name] = []
        try:
            yield early
            room = self.rooms.rooms.get(name)
            if room is not None:  # loaded: the others send their presence of it
                self.bridge.ask(room)
                for m in held:  # the row and the log the load read may predate them (a lock, an end, a big row)
                    if m.kind == Kind.HEAD:
                        room.head_at(m.seq)
                    else:
                        self._spawn(self._control, m)
        except BaseException:
            # The load failed (the session deleted meanwhile, storage away): a change held for it is
            # the session's, not the room's, and other rooms of it (the notes) may be loaded here.
            for m in held:
                if m.kind == Kind.CONTROL:
                    self._spawn(self._control, m)
            raise
        finally:
            if self._buffers.get(name) is early:
                del self._buffers[name]
            if self._held.get(name) is held:
                del self._held[name]

    def announce(self, session_id: str, what: str, value: int = 0) -> None:
        """A change beside the document (delete, expiry, row, tokens) for the other processes."""
        self._publish(Message(Kind.CONTROL, self.instance, session_id, MAIN_DOC, action=ACTIONS[what], value=value))

    def presence(self, room: Following, conn: Connection, entries: list[p.AwarenessEntry], left: bool) -> None:
        self.bridge.publish(room, conn, entries, left)

    async def gather_presence(self, room: Following) -> None:
        await self.bridge.gather(room)

    def _publish(self, message: Message) -> None:
        data = encode(self.key, message)
        assert len(data) <= MAX_MESSAGE
        self.bus.publish(data)

    # -- receiving -----------------------------------------------------------------------------
    def on_message(self, data: bytes) -> None:
        """One message from the bus, in the order Redis delivered them (never raises)."""
        head = peek_session(data)
        if head is None:
            self.refused += 1
            return
        instance, sid, doc = head
        if instance == self.instance:
            return
        name = sid if doc == MAIN_DOC else notes_room(sid)
        if data[1] == Kind.CONTROL and name not in self.rooms.rooms and name not in self._held:
            name = notes_room(sid)  # a change of the session: its notes may be all that is loaded here
        room = self.rooms.rooms.get(name)
        early = self._buffers.get(name)
        if room is None and early is None and data[1] not in (Kind.PRESENCE_QUERY, Kind.PRESENCE_DONE):
            return  # not loaded here: nothing to do, not even the tag check
        try:
            m = decode(self.key, data)
        except BadMessage as exc:
            self._refuse(exc)
            return
        if m.kind == Kind.UPDATE:
            if room is not None:
                room.receive(m.rows)
            elif early is not None:
                early.extend(m.rows)
        elif m.kind == Kind.HEAD and room is not None:
            room.head_at(m.seq)
        elif m.kind == Kind.CONTROL and room is not None:
            self._spawn(self._control, m)
        elif m.kind in (Kind.CONTROL, Kind.HEAD) and name in self._held:
            self._held[name].append(m)
        elif m.kind == Kind.PRESENCE and room is not None:
            self.bridge.received(room, m)
        elif m.kind == Kind.PRESENCE_QUERY:
            self.bridge.asked(room, m)
        elif m.kind == Kind.PRESENCE_DONE:
            self.bridge.answered(m)

    def _refuse(self, exc: BadMessage) -> None:
        """Count it; warn at most once per ``REFUSED_LOG_EVERY`` (anyone with Redis access can publish:
        a warning per message would flood the log)."""
        self.refused += 1
        now = time.monotonic()
        when, then = self._refused_logged
        if now - when >= REFUSED_LOG_EVERY:
            log.warning("bus: message refused (%s); %d refused in all, %d since the last warning (a process "
                        "with another signing secret on this prefix, or someone publishing into Redis)",
                        exc, self.refused, self.refused - then)
            self._refused_logged = (now, self.refused)

    def _spawn(self, fn: object, *args: object) -> None:
        if self._tg is not None:
            self._tg.start_soon(fn, *args)  # type: ignore[arg-type]

    async def _control(self, m: Message) -> None:
        try:
            if m.action == Action.DROP:
                code = CloseCode(m.value) if m.value in (CloseCode.SESSION_EXPIRED, CloseCode.SESSION_NOT_FOUND) \
                    else CloseCode.SESSION_NOT_FOUND
                await self.service.forget(m.session_id, code, REASONS.get(code, "session deleted"))
            elif m.action == Action.ROW:
                async with self._rows_read:
                    await self.service.follow_row(m.session_id)
            elif m.action == Action.TOKENS:
                self.service.close_revoked(m.session_id, m.value)
        except Exception:  # noqa: BLE001 - one message's failure must not end the bus
            log.exception("bus: %s of session %s failed", m.action, m.session_id)

    # -- safety nets ---------------------------------------------------------------------------
    async def on_subscribed(self) -> None:
        """Messages published while we were away are lost: every loaded room reads what it lacks."""
        for room in list(self.rooms.rooms.values()):
            room.schedule_catch_up(0.0)
        self._spawn(self._resync_rows)
        self._spawn(self._resync_presence)

    async def _resync_rows(self) -> None:
        """Session changes announced meanwhile (a lock, an end, re-issued tokens) were lost too: every
        loaded session's row is read again (a deleted one is closed by the head check)."""
        for sid in {r.session_id for r in list(self.rooms.rooms.values())}:
            try:
                async with self._rows_read:
                    await self.service.follow_row(sid)
            except Exception as exc:  # noqa: BLE001 - the database is away: the head check goes on
                log.warning("bus: re-reading session %s failed: %r", sid, exc)
                return

    async def _resync_presence(self) -> None:
        """Presence sent while unsubscribed (arrivals, leaves) was lost too: once the others' heartbeat
        keys are back (a restarted Redis starts empty), ask each for its states of every loaded room."""
        await anyio.sleep(self.check_interval)
        for room in list(self.rooms.rooms.values()):
            await self.bridge.gather(room)

    async def _check_presence(self) -> None:
        while True:
            await anyio.sleep(self.presence_check)
            try:
                await self.bridge.check_instances(list(self.rooms.rooms.values()))
            except Exception:  # noqa: BLE001 - never end the loop
                log.exception("bus: presence check failed")

    async def _check_members(self) -> None:
        while True:
            await anyio.sleep(self.presence_timeout / 2)
            try:
                await self.check_members()
            except Exception:  # noqa: BLE001 - the database is away: the next round tries again
                self._strangers.clear()

    async def check_members(self) -> None:
        """Every process serving the database (holding the instance lock) should have a heartbeat key
        on this bus. One that has had none for ``--presence-timeout`` is on another Redis or prefix: its
        edits reach here only through the head check, its locks, ends and presence never. Logged as an
        error (again every ``REFUSED_LOG_EVERY``) while it lasts."""
        store = self.service.store
        members = await self.bus.members() if self.bus.ready else None
        if self.lock is None or members is None or not isinstance(store, PostgresStore):
            self._strangers.clear()  # a restarted Redis starts without the keys: count from when it is back
            return
        holders = await store.instance_holders() - {self.lock.pid}
        heard = set(members.values())
        now = time.monotonic()
        self._strangers = {pid: self._strangers.get(pid, now) for pid in holders if str(pid).encode() not in heard}
        for pid, since in self._strangers.items():
            if now - since >= self.presence_timeout:
                log.error("crdt-server: another process serves this database (PostgreSQL backend pid %d) but is not on "
                          "this bus (another --redis-url or --redis-prefix, or it cannot reach Redis): every process of a "
                          "deployment needs the same --redis-url and --redis-prefix, "
                          "else they do not see each other's locks, ends, re-issued tokens or presence", pid)
                self._strangers[pid] = now + REFUSED_LOG_EVERY - self.presence_timeout

    async def _check_heads(self) -> None:
        failing = False
        while True:
            await anyio.sleep(self.check_interval)
            try:
                await self.check_heads()
            except Exception as exc:  # noqa: BLE001 - the database is away: the next round tries again
                if not failing:
                    log.warning("bus: head check failed: %r (logged once until it works again)", exc)
                failing = True
            else:
                failing = False

    async def check_heads(self) -> None:
        """Each loaded room against its session's newest row; sessions gone are closed here."""
        absent: set[str] = set()
        for doc in (MAIN_DOC, NOTES_DOC):
            rooms = [r for r in list(self.rooms.rooms.values()) if r.doc_key == doc and not r.gone]
            if not rooms:
                continue
            heads = await self.service.store.last_seqs([r.session_id for r in rooms], doc=doc)
            for room in rooms:
                head = heads.get(room.session_id)
                if head is not None:
                    room.head_at(head)
                else:  # deleted elsewhere: absent twice, the message (its close code) was lost
                    if room.session_id in self._absent:
                        await self.service.forget(room.session_id, CloseCode.SESSION_NOT_FOUND, "session deleted")
                    absent.add(room.session_id)
        self._absent = absent
