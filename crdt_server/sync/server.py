"""The room registry: load a session's document once, serve connections, unload when idle.

``SessionServer`` subclasses pycrdt-websocket's ``WebsocketServer`` (its task group owns every
room) and fixes, in our code, the gaps of ../shared/design/pycrdt-websocket-gaps.md:

* gap 1 — room creation is serialised per session, so concurrent first joins all sync;
* gap 3 — the document is loaded from storage (snapshot + tail) before the room serves anyone;
* gap 4/10 — rooms are flushed (pending commits + snapshot) before they unload, on an idle
  grace period and at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from pycrdt import Doc
from pycrdt.websocket import WebsocketServer

from ..storage import Store
from .connection import Connection
from .protocol import is_crdt_failure
from .room import CLOSE_SESSION_GONE, RoomOptions, SessionRoom

log = logging.getLogger(__name__)


class SessionNotFound(LookupError):
    pass


async def load_document(store: Store, session_id: str) -> tuple[Doc, int, int]:
    """Rebuild a session's document: newest snapshot + the updates after it, in one transaction.

    Returns (doc, last applied sequence number, snapshot sequence number). Never re-seeds from text.
    """
    snapshot, tail, base = await store.load(session_id)
    doc: Doc = Doc()
    with doc.transaction():
        if snapshot is not None:
            doc.apply_update(snapshot)
        for record in tail:
            try:
                doc.apply_update(record.data)
            except BaseException as exc:
                if not is_crdt_failure(exc):
                    raise
                log.warning("session %s: skipping unreadable update %d: %r", session_id, record.seq, exc)
    last = tail[-1].seq if tail else base
    return doc, last, base


class SessionServer(WebsocketServer):
    rooms: dict[str, SessionRoom]  # type: ignore[assignment]

    def __init__(self, store: Store, options: RoomOptions) -> None:
        super().__init__(rooms_ready=True, auto_clean_rooms=False, log=log, exception_handler=_log_exception)
        self.store = store
        self.options = options
        self._locks: dict[str, anyio.Lock] = {}
        self._unload_scopes: dict[str, anyio.CancelScope] = {}
        self._unloading: dict[str, anyio.Event] = {}

    async def get_room(self, name: str) -> SessionRoom:  # type: ignore[override]
        room = self.rooms.get(name)
        if room is not None:
            self._cancel_unload(name)
            return room
        lock = self._locks.setdefault(name, anyio.Lock())
        try:
            async with lock:  # gap 1: one loader per session; later callers find the room ready
                unloading = self._unloading.get(name)
                if unloading is not None:  # its last commits must land before storage is read
                    await unloading.wait()
                room = self.rooms.get(name)
                if room is None:
                    session = await self.store.get_session(name)
                    if session is None:
                        raise SessionNotFound(name)
                    doc, last_seq, snapshot_seq = await load_document(self.store, name)  # gap 3
                    room = SessionRoom(
                        name, doc, self.store, self.options,
                        last_seq=last_seq, snapshot_seq=snapshot_seq, read_only=session.status == "ended",
                    )
                    assert self._task_group is not None, "SessionServer is not running"
                    await self._task_group.start(room.start)
                    self.rooms[name] = room
        finally:
            if self._locks.get(name) is lock and not lock.locked():
                self._locks.pop(name, None)
        self._cancel_unload(name)
        return room

    @asynccontextmanager
    async def room(self, name: str) -> AsyncIterator[SessionRoom]:
        """Hold a session's room loaded for a REST operation."""
        room = await self.get_room(name)
        room.users += 1
        try:
            yield room
        finally:
            room.users -= 1
            self._maybe_schedule_unload(name, room)

    async def serve(self, websocket: Connection) -> None:  # type: ignore[override]
        """Serve one authenticated connection (the room was checked to exist by the caller)."""
        room = await self.get_room(websocket.path)
        try:
            await room.serve(websocket)
        finally:
            self._maybe_schedule_unload(websocket.path, room)

    # -- unloading -----------------------------------------------------------------------------
    def _cancel_unload(self, name: str) -> None:
        scope = self._unload_scopes.pop(name, None)
        if scope is not None:
            scope.cancel()

    def _maybe_schedule_unload(self, name: str, room: SessionRoom) -> None:
        if room.clients or room.users or name in self._unload_scopes or self.rooms.get(name) is not room:
            return
        if self._task_group is None:
            return
        scope = anyio.CancelScope()
        self._unload_scopes[name] = scope
        self._task_group.start_soon(self._unload_after_grace, name, room, scope)

    async def _unload_after_grace(self, name: str, room: SessionRoom, scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep(self.options.grace)
        if self._unload_scopes.get(name) is scope:
            del self._unload_scopes[name]
        if scope.cancel_called or room.clients or room.users:
            return
        await self.unload(name)

    async def unload(self, name: str) -> None:
        """Flush and stop a room (shielded: a flush that started always finishes). A reload of
        the same session waits until this is done, so it reads every commit of this room."""
        room = self.rooms.pop(name, None)
        if room is None:
            return
        done = self._unloading[name] = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):
                try:
                    if not room.gone:
                        await room.flush()
                except Exception:
                    log.exception("session %s: final flush failed", name)
                try:
                    await room.stop()
                except RuntimeError:
                    pass
        finally:
            if self._unloading.get(name) is done:
                del self._unloading[name]
            done.set()

    async def drop(self, name: str, code: int = CLOSE_SESSION_GONE, reason: str = "session deleted") -> None:
        """Close every socket of a session and unload it without a snapshot (it is being deleted)."""
        self._cancel_unload(name)
        room = self.rooms.get(name)
        if room is not None:
            room.close_all(code, reason)
            room.gone = True
            await self.unload(name)

    async def close_all_rooms(self) -> None:
        """Shutdown: flush every room to the store (gap 10)."""
        with anyio.CancelScope(shield=True):
            for name in list(self.rooms):
                self._cancel_unload(name)
                await self.unload(name)


def _log_exception(exc: Exception, logger: logging.Logger) -> bool:
    logger.error("websocket server error", exc_info=exc)
    return True
