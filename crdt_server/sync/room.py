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
* "Presence: no snapshot for newcomers, no cleanup": presence is tracked per connection
  (``awareness.RoomPresence``, bounded and validated); a newcomer gets every state at once, and
  the states a connection introduced are removed for the others when it goes, however it goes.
  The server has no presence entry of its own.
* "No per-connection read-only": observers and ended sessions are enforced here.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

import anyio
from pycrdt import Doc, Map, get_state, merge_updates
from pycrdt.websocket import YRoom

from ..document import META
from ..metrics import Metrics
from ..primitives import Event
from ..storage import DocumentTooLarge, SessionChange, SessionGone, StorageQuotaExceeded, Store, UpdateRecord
from ..storage.base import MAIN_DOC, NOTES_DOC
from . import protocol as p
from .awareness import PresenceFlood, RoomPresence
from .batch import Batch, Pending
from .confirm import answer_step1, send_confirmations
from .connection import SERVER, Connection, NotNow, Origin, Wait, wire_frame
from .follow import Following, NoPeers, Peers
from .guard import DocumentGuard
from .ingest import GuardedIngest
from .lifecycle import RoomLifecycle
from .loader import load_document
from .options import RoomOptions
from .pending import HeldBack
from .protocol import CloseCode
from .updates import decode

log = logging.getLogger(__name__)


class SessionRoom(Following, GuardedIngest, RoomLifecycle, YRoom):
    clients: set[Connection]  # type: ignore[assignment]  # YRoom's are pycrdt Channels; ours are Connections
    doc_key = MAIN_DOC  # which of the session's documents (and update logs) this room holds

    def __init__(
        self,
        session_id: str,
        doc: Doc[Any],
        store: Store,
        options: RoomOptions,
        *,
        last_seq: int,
        snapshot_seq: int,
        ended: bool = False,
        locked: bool = False,
        metrics: Metrics | None = None,
        doc_size: int | None = None,
        held: HeldBack | None = None,
        peers: Peers | None = None,
    ) -> None:
        super().__init__(ready=True, ydoc=doc, log=log, exception_handler=log_exception)
        # YRoom's anyio events, as the lean kind (crdt_server/primitives.py): about 3 KB less per room.
        # (the same methods; anyio's Event is the declared type upstream)
        self.ready_event, self.ydoc_observed, self._stopped = Event(), Event(), Event()  # type: ignore[assignment]
        self._provider_stop_event, self._started = Event(), Event()  # type: ignore[assignment]
        self.ready_event.set()  # ``ready=True`` above
        # No server-side presence entry: JS clients would show it as a ghost user.
        self.awareness.set_local_state(None)
        self.session_id = session_id
        self.store = store
        self._init_following(last_seq)
        self.peers = peers or NoPeers()  # the other processes (sync/follow.py)
        self._committed: list[tuple[int, bytes]] = []  # (seq, row) of the last commit, for the peers
        self.snapshot_seq = snapshot_seq
        self.options = options
        self.persist = options.persist
        self.editor_event_limit = options.editor_events
        # What editors may change now; set by the service, which owns the row (status, lock).
        self.ended = ended  # nobody edits code (their updates are compensated, never dropped)
        self.locked = locked  # candidates do not edit code
        self._timer: asyncio.TimerHandle | None = None  # the presence's next coalesced broadcast
        self.presence = RoomPresence(self.clients, options.presence, options.presence_interval, self._later)
        self.presence.relay = lambda conn, entries, left: self.peers.presence(self, conn, entries, left)
        self.holds = 0  # WebSocket handlers and REST operations that keep the room loaded
        self.gone = False  # the session was deleted: nothing more is committed or snapshotted
        self._batch = Batch()
        self._inflight: Batch | None = None
        # connections whose last sync step 2 answer held every update queued so far (sync/confirm.py)
        self._answered: set[Connection] = set()
        self._wakeup = Event()  # one per batch (crdt_server/primitives.py: no deque until waited on)
        # Editors may switch meta.language; the session row follows (see _language_changes).
        self._meta = doc.get(META, type=Map)  # kept: pycrdt drops observers of collected type objects
        self._languages: list[tuple[Origin, str, str]] = []  # (who, from, to)
        self.guard = DocumentGuard(doc, held)  # held: what the stored document holds back (sync/pending.py)
        self.broken = False  # the document holds updates that failed to commit: reload it from storage
        self._settled = Event()  # no guarded batch is between apply and commit
        self._settled.set()
        m = metrics or Metrics()  # unlabelled counters: two additions per update on the hot path
        self._count_updates, self._count_bytes = m.updates.inc, m.broadcast_bytes.inc
        self._count_slow_close = m.slow_consumer_closes.inc

        # Upper bound of the encoded state: exact at load, plus the bytes of every update since.
        self.doc_size = len(doc.get_update()) if doc_size is None else doc_size
        self.diverged = False  # the log holds rows this document never applied: never snapshot it
        self.bad_seqs: set[int] = set()  # rows the CRDT library refused: left out of every rebuild

    # -- YRoom overrides: sync/lifecycle.py -------------------------------------------------
    async def _broadcast_updates(self) -> None:
        """The ingest loop: commit a batch, then apply and broadcast it (write-ahead)."""
        try:
            while self._task_group is not None:  # ``stop`` clears it: what is queued then is refused
                await self._wakeup.wait()  # (asyncio's wait of a set event never yields to a cancel)
                self._wakeup = Event()
                batch, self._batch = self._batch, Batch()
                if batch.items or batch.noops:
                    self._inflight = batch
                    with anyio.CancelScope(shield=True):
                        try:
                            if batch.items:
                                await self._commit_and_apply(batch)
                            else:  # only updates that add nothing: confirm them, now that the batch
                                send_confirmations(batch)  # before (holding what they repeat) committed
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
        failed = []  # positions (= rows) of updates the CRDT library refused: sent to nobody
        for position, item in enumerate(batch.items):
            if self._apply(item):
                self._broadcast(item.update, exclude=item.conn)
            else:
                failed.append(position)
        send_confirmations(batch)
        if failed:
            await self._recover([self._committed[i][0] for i in failed])
        await self._after_commit(batch)

    async def _recover(self, seqs: list[int]) -> None:
        """Updates the CRDT library refused half-way may have left the document half-integrated, which
        could encode a state every newcomer fails to load: rebuild it from storage without them
        (``sync/loader.py``); sync answers wait meanwhile. The clients never got those updates."""
        self.bad_seqs.update(seqs)
        log.error("session %s: rebuilding the document without update(s) %s", self.session_id, seqs)
        if not self.persist:  # nothing stored to rebuild from
            return
        settled, self._settled = self._settled, Event()
        try:
            doc, last, _, held, _ = await load_document(self.store, self.session_id, self.doc_key, self.bad_seqs)
            self._mark(range(self.last_seq + 1, last + 1))  # the rebuild holds every row up to ``last``
            self.ydoc = doc
            self._meta = doc.get(META, type=Map)
            self.guard = DocumentGuard(doc, held)
            self.doc_size = len(held.full_state(doc))
        finally:
            self._settled.set()
            self._settled = settled

    def _record(self, item: Pending) -> UpdateRecord:
        return UpdateRecord(self.session_id, item.update, item.origin.role, item.origin.conn_id, item.origin.name)

    async def _commit(self, batch: Batch, records: list[UpdateRecord], changes: list[SessionChange]) -> bool:
        try:
            if self.options.persist:
                seqs = await self.store.append_updates(records, changes, doc=self.doc_key)
            else:  # --persistence off: sequence numbers in memory only
                seqs = list(range(self.last_seq + 1, self.last_seq + 1 + len(records)))
        except SessionGone:
            batch.error = SessionGone(self.session_id)
            self.mark_gone()
            self.close_all(CloseCode.SESSION_NOT_FOUND, "session deleted")
            return False
        except StorageQuotaExceeded as exc:  # final: nothing more fits in this session's storage
            log.warning("session %s: storage quota reached (%s)", self.session_id, exc)
            batch.error = exc
            self.broken = True  # the guard already counts these IDs as known: reload from storage
            self.close_all(CloseCode.DOCUMENT_TOO_LARGE, "session storage quota exceeded")
            return False
        except BaseException as exc:  # noqa: BLE001 - whatever failed, nobody may see uncommitted updates
            log.error("session %s: %d updates not stored (%r); closing its connections", self.session_id, len(records), exc)
            batch.error = exc
            self.broken = True
            self.close_all(CloseCode.INTERNAL_ERROR, "storage failure")
            return False
        self._committed = list(zip(seqs, (r.data for r in records), strict=True))
        self.committed_here(seqs)  # a hole below them: another process's rows (sync/follow.py)
        self._count_updates(len(records))
        return True

    def _apply(self, item: Pending) -> bool:
        """Apply a committed (or server-made) update; False if the CRDT library refused it."""
        verdict = item.verdict
        # A cleared update cannot set the language (an insert into meta.language makes it guarded);
        # it can only delete it, which ``_note_language`` ignores: two map reads saved per keystroke.
        watch = verdict is None or verdict.guarded
        before = self._meta.get("language") if watch else None
        try:
            self.ydoc.apply_update(item.update)
        except BaseException as exc:  # stored but unusable: loading skips it the same way
            if not p.is_crdt_failure(exc):
                raise
            log.warning("session %s: stored update could not be applied: %r", self.session_id, exc)
            return False
        if watch:
            self._note_language(item.origin, before)
        item.applied = True
        item.held = self.guard.applied(item.decoded, verdict is not None and verdict.pending, item.update,
                                       admitted=verdict is not None)
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
        self.peers.committed(self, self._committed)  # after this process's sockets got them
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
                frozen = self.ended or (self.locked and conn.role == "candidate")
                verdict = self.guard.check(update, conn.client_ids | conn.authored, code_frozen=frozen)
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
        if verdict is not None and conn is not None and verdict.noop:  # neither stored nor relayed
            # confirmed (once what it repeats has committed), unless the answer to this connection's
            # sync step 1 already held all of it: a reconnecting writer's delete set, every time
            if decoded.structs or conn not in self._answered:
                batch.noops.append((conn, decoded, update))
                self._wakeup.set()
            return batch
        self._check_size(update)
        if verdict is not None:
            self.guard.admit(verdict)
        item = Pending(update, conn, conn.origin if conn else origin, change, decoded, verdict)
        if verdict is not None and verdict.neutralised:
            item.change = self._neutralised(item)
        batch.items.append(item)
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
        state = self.guard.held_back.full_state(self.ydoc)
        exact = len(state) + sum(map(len, queued))
        if exact + len(update) > limit:
            exact = len(merge_updates(state, *queued, update))  # overlaps counted once
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
        if seq <= self.snapshot_seq or not self.options.persist or self.gone or self.diverged or self.ahead:
            return  # (``ahead``: the state holds rows past ``seq``, which a checkpoint at ``seq`` must not)
        state = self.guard.held_back.full_state(self.ydoc)  # with what waits for a dependency
        try:
            await self.store.write_snapshot(self.session_id, seq, state, doc=self.doc_key)
            self.snapshot_seq = seq
            self.doc_size = len(state) + sum(len(i.update) for i in self._batch.items)  # exact again
        except SessionGone:
            pass
        except ValueError:  # another process wrote a newer one (sync/follow.py): it serves loads as well
            self.snapshot_seq = seq

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
        """Serve one connection until it closes. Never raises into the room. Most frames are handled by
        ``take_frame`` as they arrive (``Connection.frames``); the others, and what it raised, come here."""
        conn = channel
        conn.on_slow_consumer = self._count_slow_close
        self.clients.add(conn)
        try:
            conn.enqueue(p.sync_frame(p.SYNC_STEP1, self.ydoc.get_state()))
            self.presence.send_snapshot(conn)  # a newcomer sees everyone at once
            self.presence.joined(conn)
            async for frame in conn.frames(partial(self.take_frame, conn)):
                await self.handle_frame(conn, frame)
        except p.ProtocolError as exc:
            log.warning("connection %s sent a frame the server refuses (%s); closing", conn.id, exc.close_reason)
            conn.close(exc.close_code, exc.close_reason)
        except PresenceFlood as exc:
            log.warning("connection %s: %s; closing", conn.id, exc)
            conn.close(CloseCode.POLICY_VIOLATION, "presence flood")
        except SessionGone:
            pass
        except DocumentTooLarge as exc:
            log.warning("connection %s: update refused (%s); closing", conn.id, exc)
            conn.close(CloseCode.DOCUMENT_TOO_LARGE, "document too large")
        finally:
            self.clients.discard(conn)
            self._answered.discard(conn)
            self.presence.remove(conn)

    async def handle_frame(self, conn: Connection, frame: bytes) -> None:
        """A frame ``Connection.frames`` passed on (not one the protocol ignores), once it can be taken."""
        while True:
            try:
                wait = self.take_frame(conn, frame)
                break
            except NotNow:  # a guarded batch is applied but not yet committed
                await self._settled.wait()
        if wait is not None:
            await wait()

    def take_frame(self, conn: Connection, frame: bytes) -> Wait | None:
        """Handle a sync, awareness or query-awareness frame now; returns what must be awaited before
        the connection's next frame is read, if anything. ``NotNow``, before anything changed, for a
        sync step 1 while a guarded batch is applied but not committed: its answer waits."""
        kind = frame[0]
        if kind == p.MSG_SYNC:
            msg = p.parse_sync(frame)
            if msg.kind == p.SYNC_STEP1:
                if not self._settled.is_set():
                    raise NotNow
                answer_step1(conn, msg.payload, self.ydoc, self.guard.held_back)
                if self._inflight is None and not self._batch.items:  # nothing queued was left out
                    self._answered.add(conn)
                else:
                    self._answered.discard(conn)
            elif not conn.read_only:  # observers: [0,1]/[0,2] are dropped
                batch = self.queue_update(msg.payload, conn)
                if len(batch.items) + len(batch.noops) >= self.options.max_pending:  # backpressure: stop reading
                    return batch.done.wait
        elif kind == p.MSG_AWARENESS:
            delay = self.presence.apply(conn, frame)
            if delay:  # over --presence-entries-rate: read this socket more slowly
                return partial(anyio.sleep, delay)
        else:  # p.MSG_QUERY_AWARENESS
            self.presence.send_snapshot(conn)
        return None

    def mark_gone(self) -> None:
        """The session was deleted: refuse further updates and never snapshot again."""
        self.gone = True

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.clients):
            conn.close(code, reason)


class NotesRoom(SessionRoom):
    """The interviewer's private notes: the same write-ahead room on its own log (``NOTES_DOC``).

    Nothing in it is server-owned and nothing in it changes the session: a ``meta.language`` an
    editor writes here is not the session's language."""

    doc_key = NOTES_DOC

    def _note_language(self, origin: Origin, before: Any) -> None:
        return None


def log_exception(exc: Exception, logger: logging.Logger) -> bool:
    """Exception handler for pycrdt-websocket rooms and servers: log, never crash the task group."""
    logger.error("room error", exc_info=exc)
    return True
