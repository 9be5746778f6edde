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
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from pycrdt import Doc, Map, MapEvent, get_state, merge_updates
from pycrdt.websocket import YRoom

from .. import presence
from ..document import META
from ..domain import LANGUAGE_PATTERN
from ..storage import DocumentTooLarge, SessionChange, SessionGone, StorageQuotaExceeded, Store, UpdateRecord
from . import protocol as p
from .connection import SERVER, Connection, Origin, wire_frame
from .protocol import CloseCode

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    update: bytes
    conn: Connection | None  # the sender, which does not get its own update back
    origin: Origin
    change: SessionChange | None  # row fields and events that commit with this update


class _Batch:
    def __init__(self) -> None:
        self.items: list[_Pending] = []
        self.done = anyio.Event()
        self.error: BaseException | None = None


@dataclass(frozen=True)
class RoomOptions:
    """How every room behaves; built once from the settings (``from_settings``)."""

    grace: float  # seconds an empty room stays loaded
    snapshot_every: int  # updates between snapshots
    persist: bool  # False: --persistence off
    presence_interval: float  # presence coalescing window (0 = relay at once)
    max_pending: int  # updates ahead of their commit before a socket stops being read
    max_document_size: int = 0  # encoded state bytes a write may not take the document past (0 = no limit)

    @classmethod
    def from_settings(cls, s: Settings) -> RoomOptions:
        return cls(
            grace=s.room_grace, snapshot_every=s.snapshot_every, persist=s.persistence == "write-ahead",
            presence_interval=s.presence_interval, max_pending=s.room_pending_updates,
            max_document_size=s.max_document_size,
        )


class SessionRoom(YRoom):
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
        doc_size: int | None = None,
    ) -> None:
        super().__init__(ready=True, ydoc=doc, log=log, exception_handler=log_exception)
        # No server-side presence entry: JS clients would show it as a ghost user.
        self.awareness.set_local_state(None)
        self.session_id = session_id
        self.store = store
        self.last_seq = last_seq
        self.snapshot_seq = snapshot_seq
        self.options = options
        self.read_only = read_only  # the session has ended; set by the service, which owns the status
        self.presence: dict[int, p.AwarenessEntry] = {}
        self._presence_out: dict[int, p.AwarenessEntry] = {}
        self._presence_flush_scheduled = False
        # clientID -> the live connection that introduced it; only that one may change it
        self._owners: dict[int, Connection] = {}
        self.holds = 0  # WebSocket handlers and REST operations that keep the room loaded
        self.gone = False  # the session was deleted: nothing more is committed or snapshotted
        self._batch = _Batch()
        self._inflight: _Batch | None = None
        self._wakeup = anyio.Event()
        # Editors may switch meta.language; the session row follows (see _language_changes).
        self._meta = doc.get(META, type=Map)  # kept: pycrdt drops observers of collected type objects
        self._applying: Origin | None = None
        self._languages: list[tuple[Origin, str]] = []
        self._meta.observe(self._on_meta)
        # Upper bound of the encoded state: exact at load, plus the bytes of every update since.
        self.doc_size = len(doc.get_update()) if doc_size is None else doc_size
        self.diverged = False  # the log holds rows this document never applied: never snapshot it

    # -- YRoom overrides ---------------------------------------------------------------------
    def send_server_awareness(self, type: str, changes: Any) -> None:
        """The server has no presence of its own."""

    async def _watch_ready(self) -> None:
        """Do not observe the document: broadcasts happen after commit in ``_broadcast_updates``."""
        self.ydoc_observed.set()

    async def _broadcast_updates(self) -> None:
        """The ingest loop: commit a batch, then apply and broadcast it (write-ahead)."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                batch, self._batch = self._batch, _Batch()
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

    async def _commit_and_apply(self, batch: _Batch) -> None:
        records = [
            UpdateRecord(self.session_id, i.update, i.origin.role, i.origin.conn_id, i.origin.name)
            for i in batch.items
        ]
        changes = [i.change for i in batch.items if i.change is not None]
        try:
            if self.options.persist:
                seqs = await self.store.append_updates(records, changes)
            else:  # --persistence off: sequence numbers in memory only
                seqs = list(range(self.last_seq + 1, self.last_seq + 1 + len(records)))
        except SessionGone:
            batch.error = SessionGone(self.session_id)
            self.mark_gone()
            self.close_all(CloseCode.SESSION_NOT_FOUND, "session deleted")
            return
        except StorageQuotaExceeded as exc:  # final: nothing more fits in this session's storage
            log.warning("session %s: storage quota reached (%s)", self.session_id, exc)
            batch.error = exc
            self.close_all(CloseCode.DOCUMENT_TOO_LARGE, "session storage quota exceeded")
            return
        except BaseException as exc:  # noqa: BLE001 - whatever failed, nobody may see uncommitted updates
            log.error("session %s: %d updates not stored (%r); closing its connections", self.session_id, len(records), exc)
            batch.error = exc
            self.close_all(CloseCode.INTERNAL_ERROR, "storage failure")
            return
        if seqs and seqs[0] != self.last_seq + 1 and not self.diverged:
            self.diverged = True  # another writer committed rows in between (two servers on one database)
            log.error("session %s: rows %d..%d of the log were not applied here; no snapshot will be taken",
                      self.session_id, self.last_seq + 1, seqs[0] - 1)
        conns = self.clients
        for item in batch.items:
            self._applying = item.origin
            try:
                self.ydoc.apply_update(item.update)
            except BaseException as exc:  # stored but unusable: loading skips it the same way
                if not p.is_crdt_failure(exc):
                    raise
                log.warning("session %s: stored update could not be applied: %r", self.session_id, exc)
                continue
            finally:
                self._applying = None
            frame = p.sync_frame(p.SYNC_UPDATE, item.update)
            wire = wire_frame(frame)  # framed once for every recipient
            for conn in conns:
                if conn is not item.conn:
                    conn.enqueue(frame, wire)
        self.last_seq = seqs[-1]
        batch.done.set()
        await self._language_changes()
        if self.last_seq - self.snapshot_seq >= self.options.snapshot_every:
            try:
                await self.snapshot()
            except Exception:  # the log has everything; a missed snapshot only slows the next load
                log.exception("session %s: snapshot failed", self.session_id)

    def _on_meta(self, event: MapEvent) -> None:
        origin = self._applying
        if origin is None or origin is SERVER or "language" not in getattr(event, "keys", ()):
            return
        value = self._meta.get("language")
        if isinstance(value, str) and _LANGUAGE.match(value):
            self._languages.append((origin, value))

    async def _language_changes(self) -> None:
        """An editor switched ``meta.language``: the session row, which REST reads, follows."""
        if not self._languages or not self.options.persist:
            self._languages.clear()
            return
        _, language = self._languages[-1]
        self._languages.clear()
        try:
            await self.store.change_session(SessionChange(self.session_id, {"language": language}))
        except Exception as exc:  # noqa: BLE001 - the document has it; the next load brings the row along
            log.warning("session %s: language change not recorded: %r", self.session_id, exc)

    # -- updates ---------------------------------------------------------------------------
    def queue_update(
        self, update: bytes, conn: Connection | None = None, *, origin: Origin = SERVER,
        change: SessionChange | None = None,
    ) -> _Batch:
        """Validate an update and queue it for the next commit; the batch's ``done`` fires once applied."""
        try:
            get_state(update)  # decodes the whole update: garbage never reaches the log
        except BaseException as exc:
            if not p.is_crdt_failure(exc):
                raise
            raise p.ProtocolError("malformed Yjs update") from None
        if self.gone:
            raise SessionGone(self.session_id)
        self._check_size(update)
        batch = self._batch
        batch.items.append(_Pending(update, conn, conn.origin if conn else origin, change))
        self._wakeup.set()
        return batch

    def _check_size(self, update: bytes) -> None:
        """``DocumentTooLarge`` if ``update`` would take the document past the limit.

        Cheap per update: the running bound (``doc_size``) grows by each update's bytes; only when
        it passes the limit is the exact size computed (the state plus what is still queued)."""
        limit = self.options.max_document_size
        if not limit or self.doc_size + len(update) <= limit:
            self.doc_size += len(update)
            return
        queued = [i.update for b in (self._inflight, self._batch) if b is not None for i in b.items]
        exact = len(self.ydoc.get_update()) + sum(map(len, queued))
        if exact + len(update) > limit:
            exact = len(merge_updates(self.ydoc.get_update(), *queued, update))  # overlaps counted once
            if exact > limit:
                raise DocumentTooLarge(f"the document would exceed {limit} bytes")
            self.doc_size = exact
        else:
            self.doc_size = exact + len(update)

    async def submit(self, update: bytes, change: SessionChange | None = None) -> None:
        """Commit (with ``change``), apply and broadcast a server-side update; returns once applied."""
        batch = self.queue_update(update, change=change)
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    async def snapshot(self) -> None:
        """Store the full state at ``last_seq`` so loading reads a short tail."""
        seq = self.last_seq
        if seq <= self.snapshot_seq or not self.options.persist or self.gone or self.diverged:
            return
        state = self.ydoc.get_update()
        try:
            await self.store.write_snapshot(self.session_id, seq, state)
            self.snapshot_seq = seq
            self.doc_size = len(state) + sum(len(i.update) for i in self._batch.items)  # exact again
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
                except DocumentTooLarge as exc:
                    log.warning("connection %s: update refused (%s); closing", conn.id, exc)
                    conn.close(CloseCode.DOCUMENT_TOO_LARGE, "document too large")
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


_LANGUAGE = re.compile(LANGUAGE_PATTERN)


def log_exception(exc: Exception, logger: logging.Logger) -> bool:
    """Exception handler for pycrdt-websocket rooms and servers: log, never crash the task group."""
    logger.error("room error", exc_info=exc)
    return True
