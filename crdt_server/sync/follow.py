"""Following a session's log: which rows a live document holds, and applying rows committed elsewhere.

With several processes (docs/design/cluster.md), each keeps its own copy of a session's document;
a row another process committed reaches this one as a bus message, and this module is the one place
such rows are applied. What a document holds is tracked by **sequence number**, never by state
vector: a delete does not change a Yjs state vector, so a copy that missed a delete would look
complete. ``last_seq`` is the contiguous head (every row up to it is applied) and ``ahead`` the rows
applied beyond a hole. A hole (a lost or late message, rows committed here while another process's
were still on their way) is filled from the database after ``GAP_GRACE`` (publishes of different
processes may arrive in another order than they committed); the cluster also asks for a catch-up on
every bus (re)subscribe and when its periodic check finds the database's head past ``last_seq``.
Rows are applied at most once each, in any order: the CRDT holds back what depends on a row not
yet applied.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, Protocol

import anyio
from pycrdt import Doc, Map

from ..document import META_KEYS
from ..storage import Store
from . import protocol as p
from .awareness import RoomPresence
from .batch import Batch
from .connection import Connection
from .guard import DocumentGuard
from .updates import decode

log = logging.getLogger("crdt_server.sync.room")

GAP_GRACE = 0.1  # seconds a hole may stay open before the database is read
CHUNK = 1000  # rows per read while catching up
BusState = Literal["ok", "down", "off"]


class Peers(Protocol):
    """What the sync layer tells the other processes (the cluster), or nobody (one process)."""

    follows: bool  # other processes may commit rows of a session: holes are repaired, not fatal
    @property
    def state(self) -> BusState:
        """For /health: ``off`` (one process), ``ok`` or ``down`` (the bus)."""

    def committed(self, room: Following, rows: list[tuple[int, bytes]]) -> None:
        """Rows this process committed, applied and sent to its sockets: publish them."""

    def buffering(self, name: str) -> Any:
        """A context manager, while a room loads: rows arriving meanwhile are kept (a list it yields)."""

    def announce(self, session_id: str, what: str, value: int = 0) -> None:
        """A change beside the document: ``drop`` (value: the close code), ``row``, ``tokens`` (value: the
        new generation)."""

    def presence(self, room: Following, conn: Connection, entries: list[p.AwarenessEntry], left: bool) -> None:
        """Presence states a connection here set (validated), or ``left``: for the other processes."""

    async def gather_presence(self, room: Following) -> None:
        """Wait until the room holds every other process's presence (the participants list)."""


class NoPeers:
    """One process: nothing to tell, and a hole in the log means another writer (``diverged``)."""

    follows = False
    state: BusState = "off"

    def committed(self, room: Following, rows: list[tuple[int, bytes]]) -> None:
        return None

    @contextmanager
    def buffering(self, name: str) -> Iterator[list[tuple[int, bytes]]]:
        yield []

    def announce(self, session_id: str, what: str, value: int = 0) -> None:
        return None

    def presence(self, room: Following, conn: Connection, entries: list[p.AwarenessEntry], left: bool) -> None:
        return None

    async def gather_presence(self, room: Following) -> None:
        return None


class Following:
    """Mixed into ``SessionRoom`` (see the module docstring)."""

    session_id: str
    doc_key: str
    ydoc: Doc[Any]
    guard: DocumentGuard
    store: Store
    persist: bool
    gone: bool
    diverged: bool
    doc_size: int
    bad_seqs: set[int]
    ended: bool
    locked: bool
    _meta: Map[Any]
    peers: Peers
    presence: RoomPresence
    _inflight: Batch | None
    _spawn: Callable[[Any], bool]
    _broadcast: Callable[[bytes, Connection | None], None]
    _recover: Callable[[list[int]], Awaitable[None]]

    def _init_following(self, last_seq: int) -> None:
        self.last_seq = last_seq  # every row up to here is applied
        self.ahead: set[int] = set()  # rows applied past a hole
        self._catch_up_scheduled = False
        self._catching_up = anyio.Lock()
        self._catch_up_failing = False  # logged once until a catch-up succeeds again

    def has_row(self, seq: int) -> bool:
        return seq <= self.last_seq or seq in self.ahead

    def _mark(self, seqs: Iterable[int]) -> None:
        """Rows now applied (committed here or elsewhere); ``last_seq`` moves over what is contiguous."""
        ahead = self.ahead
        for seq in seqs:
            if seq == self.last_seq + 1 and not ahead:
                self.last_seq = seq
            elif seq > self.last_seq:
                ahead.add(seq)
        while self.last_seq + 1 in ahead:
            self.last_seq += 1
            ahead.discard(self.last_seq)

    def committed_here(self, seqs: list[int]) -> None:
        """The ingest loop committed ``seqs``: a hole below them is another process's rows (followed)
        or, with one process, another writer on the database (never snapshot again)."""
        self._mark(seqs)
        if not self.ahead:
            return
        if self.peers.follows:
            self.schedule_catch_up()
        elif not self.diverged:
            self.diverged = True
            log.error("session %s: rows %d.. of the log were not applied here (another server on this database?); "
                      "no snapshot will be taken", self.session_id, self.last_seq + 1)

    def receive(self, rows: Iterable[tuple[int, bytes]]) -> None:
        """Rows another process committed (a bus message): applied and sent to this process's sockets;
        a hole they reveal is filled from the database shortly."""
        self.apply_rows(rows)
        if self.ahead:
            self.schedule_catch_up()

    def head_at(self, seq: int) -> None:
        """The log is at ``seq`` (a hint or the periodic check): catch up if this copy is behind."""
        if seq > self.last_seq:
            self.schedule_catch_up(0.0)

    def apply_rows(self, rows: Iterable[tuple[int, bytes]]) -> None:
        failed = []
        applied = False
        for seq, data in sorted(rows):
            if self.has_row(seq) or self.gone:
                continue
            if seq in self.bad_seqs:  # refused before: left out, as every rebuild leaves it out
                self._mark([seq])
                continue
            try:
                decoded = decode(data)
                waits = self.guard.waits(decoded)
                self.ydoc.apply_update(data)
            except BaseException as exc:
                if not p.is_crdt_failure(exc) and not isinstance(exc, p.ProtocolError):
                    raise
                log.warning("session %s: committed row %d could not be applied: %r", self.session_id, seq, exc)
                failed.append(seq)
                self._mark([seq])
                continue
            self.guard.applied(decoded, waits, data)
            self.doc_size += len(data)
            self._mark([seq])
            self._broadcast(data, None)
            applied = True
        if applied:
            self._follow_meta()  # before this turn ends, so before any client answers what it was sent
        if failed:
            self._spawn(lambda: self._recover(failed))

    def _follow_meta(self) -> None:
        """The session's status and lock travel in the document's meta as well as in its row: the room
        enforces what its clients were just shown, without waiting for the CONTROL message that re-reads
        the row (it can come later). Committed rows carry only server-written meta (clients' are reverted)."""
        status = self._meta.get(META_KEYS["status"])
        if status is not None:
            self.ended = status == "ended"
        locked = self._meta.get(META_KEYS["locked"])
        if locked is not None:
            self.locked = bool(locked)


    def schedule_catch_up(self, delay: float = GAP_GRACE) -> None:
        if self._catch_up_scheduled or not self.persist or self.gone:
            return

        async def later() -> None:
            try:
                await anyio.sleep(delay)
            finally:
                self._catch_up_scheduled = False
            await self.catch_up()

        self._catch_up_scheduled = self._spawn(later)

    async def catch_up(self) -> None:
        """Read the rows after ``last_seq`` from the database and apply the ones this copy lacks."""
        if not self.persist:
            return
        async with self._catching_up:
            if self._inflight is not None:  # its rows are committed or about to be: let it apply them
                await self._inflight.done.wait()
            while not self.gone:
                try:
                    rows = await self.store.read_updates(self.session_id, self.last_seq, CHUNK, doc=self.doc_key)
                except Exception as exc:  # noqa: BLE001 - the database is away: the next check tries again
                    if not self._catch_up_failing:
                        log.warning("session %s: catching up failed: %r", self.session_id, exc)
                    self._catch_up_failing = True
                    return
                self._catch_up_failing = False
                before = self.last_seq
                self.apply_rows((r.seq, r.data) for r in rows)
                if len(rows) < CHUNK or self.last_seq == before:
                    return
