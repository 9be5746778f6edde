"""Presence across processes: awareness crosses the bus (never stored), and dies with its process.

Why not rely on y-protocols' 30 s timeout: a process killed with -9 sends no removal, and its
clients would haunt everyone else's editor for half a minute. Every process keeps a heartbeat key
in Redis (``RedisBus._pinger``, expiring after half of ``--presence-timeout``); the processes whose
connections a room shows are checked every fifth of it, and one whose key is missing twice in a
row is dead: its connections leave every room here, as if each had closed (their clients get the
usual removals). Remote states go through the room's own checks (``RoomPresence.apply_remote``):
one enforcement point for every state, wherever its client is connected.

A room that loads asks the others for their states of it (``PRESENCE_QUERY``); the participants
list asks with a nonce and waits, at most ``--redis-timeout``, until every live process answered
(``PRESENCE_DONE`` comes after its states on the same connection, so they have arrived by then).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from ..sync import protocol as p
from ..sync.awareness import RemoteOwner
from .bus import RedisBus
from .messages import Kind, Message

if TYPE_CHECKING:
    from ..sync.connection import Connection
    from ..sync.follow import Following

log = logging.getLogger(__name__)
MISSES = 2  # heartbeat checks an instance's key may be missing before its connections leave


@dataclass
class _Query:
    room: Following
    expected: set[bytes]  # the processes with a heartbeat key when it was sent
    started: float
    answered: set[bytes] = field(default_factory=set)
    done: anyio.Event = field(default_factory=anyio.Event)


class PresenceBridge:
    def __init__(self, bus: RedisBus, publish: Callable[[Message], None], timeout: float, frame_bytes: int) -> None:
        self.bus, self._publish, self.timeout, self.frame_bytes = bus, publish, timeout, frame_bytes
        self.instance = bus.instance
        self.seen: dict[bytes, int] = {}  # instances whose connections rooms here show -> missed checks
        self._waiting: dict[int, _Query] = {}

    def publish(self, room: Following, conn: Connection, entries: list[p.AwarenessEntry], left: bool) -> None:
        frames = p.awareness_frames(entries, self.frame_bytes) if entries else [b""]
        for frame in frames:
            self._publish(Message(Kind.PRESENCE, self.instance, room.session_id, room.doc_key, conn_id=conn.id,
                                  role=conn.role, since=conn.connected_at, left=left, frame=frame))

    def received(self, room: Following, m: Message) -> None:
        self.seen.setdefault(m.instance, 0)
        room.presence.apply_remote(RemoteOwner(m.instance, m.conn_id, m.role, m.since), m.frame, m.left)

    def ask(self, room: Following, nonce: int = 0) -> None:
        self._publish(Message(Kind.PRESENCE_QUERY, self.instance, room.session_id, room.doc_key, seq=nonce))

    def asked(self, room: Following | None, m: Message) -> None:
        """Another process asks for this one's states of a session (and, with a nonce, waits for the end)."""
        if room is not None:
            for conn, entries in room.presence.local_states().items():
                self.publish(room, conn, entries, False)
        if m.seq:
            self._publish(Message(Kind.PRESENCE_DONE, self.instance, m.session_id, m.doc, seq=m.seq))

    def answered(self, m: Message) -> None:
        """A process finished answering: its connections the answer did not mention are gone (their
        "left" was lost, e.g. while Redis restarted)."""
        query = self._waiting.get(m.seq)
        if query is not None:
            query.answered.add(m.instance)
            query.room.presence.drop_instance(m.instance, unheard_since=query.started)
            if query.expected <= query.answered:
                query.done.set()

    async def gather(self, room: Following) -> None:
        """Wait until every live process sent its states of ``room`` (at most the bus timeout)."""
        if not self.bus.ready:
            return
        expected = await self.bus.instances() - {self.instance}
        if not expected:
            return
        nonce = secrets.randbits(62) + 1
        query = self._waiting[nonce] = _Query(room, expected, time.monotonic())
        try:
            self.ask(room, nonce)
            with anyio.move_on_after(self.timeout):
                await query.done.wait()
        finally:
            del self._waiting[nonce]

    async def check_instances(self, rooms: Iterable[Following]) -> None:
        """Connections of processes whose heartbeat key is gone leave every room here."""
        instances = list(self.seen)
        alive = await self.bus.alive(instances)
        if alive is None:  # Redis does not answer: nobody can be declared dead
            return
        dead = []
        for instance, ok in zip(instances, alive, strict=True):
            self.seen[instance] = 0 if ok else self.seen[instance] + 1
            if self.seen[instance] >= MISSES:
                dead.append(instance)
                del self.seen[instance]
        for instance in dead:
            log.warning("bus: process %s stopped renewing its heartbeat; its connections leave", instance.hex())
            for room in rooms:
                room.presence.drop_instance(instance)
