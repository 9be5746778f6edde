"""A session's live document: write-ahead ingest, fan-out, presence.

``SessionRoom`` subclasses pycrdt-websocket's ``YRoom`` for its lifecycle (start/stop in the
registry's task group, ``ydoc``, ``clients``) and replaces the parts that fall short; each is
described in docs/design/pycrdt-websocket.md:

* "Fire-and-forget store writes": YRoom broadcasts from a document observer and writes to the
  store without waiting. Here every incoming update is validated, **committed** (group commit),
  then applied and broadcast by one ingest task, so no client ever receives an update the
  database lacks.
* "A failed send breaks the room": fan-out goes through each connection's bounded queue
  (``Connection.enqueue``), which never raises.
* "Presence: no snapshot for newcomers, no cleanup": presence is tracked per connection; a
  newcomer gets every state at once, and the states a connection introduced are removed for the
  others when it goes, however it goes. The server has no presence entry of its own.
* "No per-connection read-only": observers and ended sessions are enforced here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from pycrdt import Doc, Map, get_state
from pycrdt.websocket import YRoom

from .. import presence
from ..document import META
from ..metrics import Metrics
from ..storage import SessionChange, SessionGone, Store, UpdateRecord
from . import protocol as p
from .connection import SERVER, Connection, Origin, wire_frame
from .guard import DocumentGuard
from .ingest import Batch, GuardedIngest, Pending
from .protocol import CloseCode
from .updates import decode

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoomOptions:
    """How every room behaves; built once from the settings (``from_settings``)."""

    grace: float  # seconds an empty room stays loaded
    snapshot_every: int  # updates between snapshots
    persist: bool  # False: --persistence off
    presence_interval: float  # presence coalescing window (0 = relay at once)
    max_pending: int  # updates ahead of their commit before a socket stops being read
    editor_events: int = 100  # history events one connection's edits may cause (reverts, language switches)

    @classmethod
    def from_settings(cls, s: Settings) -> RoomOptions:
        return cls(
            grace=s.room_grace, snapshot_every=s.snapshot_every, persist=s.persistence == "write-ahead",
            presence_interval=s.presence_interval, max_pending=s.room_pending_updates,
            editor_events=s.editor_events_per_connection,
        )


class SessionRoom(GuardedIngest, YRoom):
    clients: set[Connection]  # type: ignore[assignment]  # YRoom's are pycrdt Channels; ours are Connections

    def __init__(
        self,
        session_id: str,
        doc: Doc[Any],
        store: Store,
        options: RoomOptions,
        *,
        last_seq: int,
        snapshot_seq: int,
        read_only: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(ready=True, ydoc=doc, log=log, exception_handler=log_exception)
        # No server-side presence entry: JS clients would show it as a ghost user.
        self.awareness.set_local_state(None)
        self.session_id = session_id
        self.store = store
        self.last_seq = last_seq
        self.snapshot_seq = snapshot_seq
        self.options = options
        self.persist = options.persist
        self.editor_event_limit = options.editor_events
        self.read_only = read_only  # the session has ended; set by the service, which owns the status
        self.presence: dict[int, p.AwarenessEntry] = {}
        self._presence_out: dict[int, p.AwarenessEntry] = {}
        self._presence_flush_scheduled = False
        # clientID -> the live connection that introduced it; only that one may change it
        self._owners: dict[int, Connection] = {}
        self.holds = 0  # WebSocket handlers and REST operations that keep the room loaded
        self.gone = False  # the session was deleted: nothing more is committed or snapshotted
        self._batch = Batch()
        self._inflight: Batch | None = None
        self._wakeup = anyio.Event()
        # Editors may switch meta.language; the session row follows (see _language_changes).
        self._meta = doc.get(META, type=Map)  # kept: pycrdt drops observers of collected type objects
        self._languages: list[tuple[Origin, str, str]] = []  # (who, from, to)
        self.guard = DocumentGuard(doc)
        self.broken = False  # the document holds updates that failed to commit: reload it from storage
        self._settled = anyio.Event()  # no guarded batch is between apply and commit
        self._settled.set()
        m = metrics or Metrics()  # unlabelled counters: two additions per update on the hot path
        self._count_updates, self._count_bytes = m.updates.inc, m.broadcast_bytes.inc
        self._count_slow_close = m.slow_consumer_closes.inc

    # -- YRoom overrides ---------------------------------------------------------------------
    def send_server_awareness(self, type: str, changes: Any) -> None:
        """The server has no presence of its own."""

    async def _watch_ready(self) -> None:
        """Do not observe the document: broadcasts happen after commit in ``_broadcast_updates``."""
        self.ydoc_observed.set()

    async def _broadcast_updates(self) -> None:
        """The ingest loop: commit a batch, then apply and broadcast it (write-ahead)."""
        # YRoom's start created a memory stream for its observer-driven broadcast, which we replace.
        self._update_send_stream.close()
        self._update_receive_stream.close()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                batch, self._batch = self._batch, Batch()
                if batch.items:
                    self._inflight = batch
                    with anyio.CancelScope(shield=True):
                        try:
                            await self._commit_and_apply(batch)
                        finally:
                            batch.done.set()  # whatever happened, nobody waits forever
                            self._inflight = None
        finally:  # the room is stopping: updates queued behind were never committed
            pending = self._batch
            if pending.items and not pending.done.is_set():
                pending.error = SessionGone(self.session_id)
                pending.done.set()

    async def _commit_and_apply(self, batch: Batch) -> None:
        if any(i.verdict is not None and i.verdict.guarded for i in batch.items):
            return await self._apply_and_commit(batch)
        records = [self._record(i) for i in batch.items]
        changes = [i.change for i in batch.items if i.change is not None]
        if not await self._commit(batch, records, changes):
            return
        for item in batch.items:
            if self._apply(item):
                self._broadcast(item.update, exclude=item.conn)
        await self._after_commit(batch)

    def _record(self, item: Pending) -> UpdateRecord:
        return UpdateRecord(self.session_id, item.update, item.origin.role, item.origin.conn_id, item.origin.name)

    async def _commit(self, batch: Batch, records: list[UpdateRecord], changes: list[SessionChange]) -> bool:
        try:
            if self.options.persist:
                seqs = await self.store.append_updates(records, changes)
            else:  # --persistence off: sequence numbers in memory only
                seqs = list(range(self.last_seq + 1, self.last_seq + 1 + len(records)))
        except SessionGone:
            batch.error = SessionGone(self.session_id)
            self.mark_gone()
            self.close_all(CloseCode.SESSION_NOT_FOUND, "session deleted")
            return False
        except BaseException as exc:  # noqa: BLE001 - whatever failed, nobody may see uncommitted updates
            log.error("session %s: %d updates not stored (%r); closing its connections", self.session_id, len(records), exc)
            batch.error = exc
            self.close_all(CloseCode.INTERNAL_ERROR, "storage failure")
            return False
        self.last_seq = seqs[-1]
        self._count_updates(len(records))
        return True

    def _apply(self, item: Pending) -> bool:
        """Apply a committed (or server-made) update; False if the CRDT library refused it."""
        before = self._meta.get("language")
        try:
            self.ydoc.apply_update(item.update)
        except BaseException as exc:  # stored but unusable: loading skips it the same way
            if not p.is_crdt_failure(exc):
                raise
            log.warning("session %s: stored update could not be applied: %r", self.session_id, exc)
            return False
        self._note_language(item.origin, before)
        self.guard.applied(item.decoded, pending=item.verdict is not None and item.verdict.pending)
        return True

    def _broadcast(self, update: bytes, exclude: Connection | None) -> None:
        frame = p.sync_frame(p.SYNC_UPDATE, update)
        wire = wire_frame(frame)  # framed once for every recipient
        clients = self.clients
        for conn in clients:
            if conn is not exclude:
                conn.enqueue(frame, wire)
        self._count_bytes(len(wire) * (len(clients) - (exclude in clients)))

    async def _after_commit(self, batch: Batch) -> None:
        batch.done.set()
        await self._language_changes()
        if self.last_seq - self.snapshot_seq >= self.options.snapshot_every:
            try:
                await self.snapshot()
            except Exception:  # noqa: BLE001 - the log has everything; a missed snapshot only slows the next load
                log.exception("session %s: snapshot failed", self.session_id)

    # -- updates ---------------------------------------------------------------------------
    def queue_update(
        self, update: bytes, conn: Connection | None = None, *, origin: Origin = SERVER,
        change: SessionChange | None = None,
    ) -> Batch:
        """Validate an update and queue it for the next commit; the batch's ``done`` fires once applied.

        A client's update is classified by the guard first (and loses deletes aimed at other
        clients' unseen IDs); the server's own are trusted."""
        verdict = None
        try:
            if conn is not None:
                verdict = self.guard.check(update, conn.client_ids | conn.authored)
                update, decoded = verdict.update, verdict.decoded
            else:
                decoded = decode(update)
            get_state(update)  # the CRDT library decodes it too: garbage never reaches the log
        except BaseException as exc:
            if not p.is_crdt_failure(exc) or isinstance(exc, (AttributeError, TypeError, NameError)):
                raise
            raise p.ProtocolError("malformed Yjs update") from None
        if conn is not None and verdict is not None:
            conn.authored.update(s.client for s in decoded.structs)
            if verdict.dropped_deletes:
                log.warning("session %s: dropped deletes of %d unseen IDs of other clients from connection %s",
                            self.session_id, verdict.dropped_deletes, conn.id)
        if self.gone:
            raise SessionGone(self.session_id)
        batch = self._batch
        batch.items.append(Pending(update, conn, conn.origin if conn else origin, change, decoded, verdict))
        self._wakeup.set()
        return batch

    async def submit(self, update: bytes, change: SessionChange | None = None) -> None:
        """Commit (with ``change``), apply and broadcast a server-side update; returns once applied."""
        batch = self.queue_update(update, change=change)
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    async def snapshot(self) -> None:
        """Store the full state at ``last_seq`` so loading reads a short tail."""
        seq = self.last_seq
        if seq <= self.snapshot_seq or not self.options.persist or self.gone:
            return
        state = self.ydoc.get_update()
        try:
            await self.store.write_snapshot(self.session_id, seq, state)
            self.snapshot_seq = seq
        except SessionGone:
            pass

    async def flush(self) -> None:
        """Wait for the batch being committed and the queued one, then snapshot."""
        if self._inflight is not None:
            await self._inflight.done.wait()
        batch = self._batch
        if batch.items:
            self._wakeup.set()
            await batch.done.wait()
        await self.snapshot()

    # -- connections -------------------------------------------------------------------------
    async def serve(self, channel: Connection) -> None:  # type: ignore[override]
        """Serve one connection until it closes. Never raises into the room."""
        conn = channel
        conn.on_slow_consumer = self._count_slow_close
        self.clients.add(conn)
        try:
            conn.enqueue(p.sync_frame(p.SYNC_STEP1, self.ydoc.get_state()))
            live = [e for e in self.presence.values() if not e.removed]
            if live:  # a newcomer sees everyone at once
                conn.enqueue(p.awareness_frame(live))
            async for frame in conn.frames():
                try:
                    await self.handle_frame(conn, frame)
                except p.ProtocolError as exc:
                    log.warning("connection %s sent a malformed frame (%s); closing", conn.id, exc)
                    conn.close(CloseCode.MALFORMED, f"malformed message: {exc}"[:120])
                    return
                except SessionGone:
                    return
        finally:
            self.clients.discard(conn)
            self._remove_presence(conn)

    async def handle_frame(self, conn: Connection, frame: bytes) -> None:
        if not frame:
            raise p.ProtocolError("empty frame")
        kind = frame[0]
        if kind == p.MSG_SYNC:
            msg = p.parse_sync(frame)
            if msg.kind == p.SYNC_STEP1:
                if not self._settled.is_set():  # a guarded batch is applied but not yet committed
                    await self._settled.wait()
                try:
                    reply = self.ydoc.get_update(msg.payload)
                except BaseException as exc:
                    if not p.is_crdt_failure(exc):
                        raise
                    raise p.ProtocolError("malformed state vector") from None
                conn.enqueue(p.sync_frame(p.SYNC_STEP2, reply))
            elif not (conn.read_only or self.read_only):  # read-only peers: [0,1]/[0,2] are dropped
                batch = self.queue_update(msg.payload, conn)
                if len(batch.items) >= self.options.max_pending:  # backpressure: stop reading this socket
                    await batch.done.wait()
        elif kind == p.MSG_AWARENESS:
            self._apply_presence(conn, frame)
        elif kind == p.MSG_QUERY_AWARENESS:
            live = [e for e in self.presence.values() if not e.removed]
            if live:
                conn.enqueue(p.awareness_frame(live))
        elif kind == p.MSG_AUTH:
            pass  # clients never need to send auth messages; ignore like the reference server
        else:
            raise p.ProtocolError(f"unknown message type {kind}")

    # -- presence ----------------------------------------------------------------------------
    def _apply_presence(self, conn: Connection, frame: bytes) -> None:
        accepted = []
        for entry in p.parse_awareness(frame):
            owner = self._owners.get(entry.client_id)
            if owner is not None and owner is not conn:
                continue  # another live connection's clientID: no spoofing or removing others
            current = self.presence.get(entry.client_id)
            if current is None or entry.clock > current.clock or (
                entry.clock == current.clock and entry.removed and not current.removed
            ):
                self.presence[entry.client_id] = entry
                accepted.append(entry)
                if entry.removed:
                    conn.client_ids.discard(entry.client_id)
                    self._owners.pop(entry.client_id, None)
                else:
                    conn.client_ids.add(entry.client_id)
                    self._owners[entry.client_id] = conn
                    # Remembered on the connection: the update log and the "left" event name the
                    # author even after a graceful leave has removed the state.
                    conn.name = presence.user_field(presence.parse_state(entry.state), "name") or conn.name
        if self.options.presence_interval <= 0:
            # Relay as is to everyone, the sender included: the echo keeps a lone client alive.
            self._broadcast_presence_frame(frame)
        elif accepted:
            self._queue_presence(accepted)

    def presence_states(self, conn: Connection) -> list[Any]:
        """The parsed presence states a connection introduced (oldest clientID first)."""
        return [presence.parse_state(self.presence[c].state) for c in sorted(conn.client_ids) if c in self.presence]

    def _queue_presence(self, entries: list[p.AwarenessEntry]) -> None:
        """Coalesce presence: one frame per room per interval with the newest entry per client.

        Presence, not edits, dominates CPU in big rooms (every cursor move goes to everyone);
        200 clients at 1 Hz become at most 1/interval frames per second per recipient.
        """
        for entry in entries:
            self._presence_out[entry.client_id] = entry
        if not self._presence_flush_scheduled and self._task_group is not None:
            self._presence_flush_scheduled = True
            self._task_group.start_soon(self._flush_presence_later)

    async def _flush_presence_later(self) -> None:
        try:
            await anyio.sleep(self.options.presence_interval)
        finally:  # also if the room's task group restarts meanwhile
            self._presence_flush_scheduled = False
        entries = list(self._presence_out.values())
        self._presence_out.clear()
        if entries:
            self._broadcast_presence_frame(p.awareness_frame(entries))

    def _broadcast_presence_frame(self, frame: bytes) -> None:
        wire = wire_frame(frame)
        for other in self.clients:
            other.enqueue(frame, wire)

    def _remove_presence(self, conn: Connection) -> None:
        """Tell the others that this connection's clients left (same clock, null state, as the
        reference server does, so a client that reconnects is accepted at its next renewal)."""
        removed = []
        for client_id in conn.client_ids:
            if self._owners.get(client_id) is conn:
                del self._owners[client_id]
            entry = self.presence.get(client_id)
            if entry is not None and not entry.removed:
                gone = p.AwarenessEntry(client_id, entry.clock, b"null")
                self.presence[client_id] = gone
                self._presence_out.pop(client_id, None)
                removed.append(gone)
        conn.client_ids.clear()
        if removed:
            self._broadcast_presence_frame(p.awareness_frame(removed))
        if not self.clients:
            self.presence.clear()
            self._presence_out.clear()

    def mark_gone(self) -> None:
        """The session was deleted: refuse further updates and never snapshot again."""
        self.gone = True

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.clients):
            conn.close(code, reason)




def log_exception(exc: Exception, logger: logging.Logger) -> bool:
    """Exception handler for pycrdt-websocket rooms and servers: log, never crash the task group."""
    logger.error("room error", exc_info=exc)
    return True
