"""The room registry: load a session's document once, hold it while used, unload when idle.

``SessionServer`` subclasses pycrdt-websocket's ``WebsocketServer`` (its task group owns every
room) and handles in our code what it lacks (docs/design/pycrdt-websocket.md):

* "Concurrent first joins": room creation is serialised per session, so concurrent first joins
  all sync;
* "No load before serving": the document is loaded from storage (snapshot + tail) before the
  room serves anyone;
* "Shutdown": rooms are flushed (pending commits + snapshot) before they unload, after an idle
  grace period and at shutdown.

Callers hold a room with ``async with server.room(id) as room`` (the WebSocket handler for the
life of its socket, REST operations for one request); the idle unload starts when nobody does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from pycrdt import Doc, Map
from pycrdt.websocket import WebsocketServer

from ..document import META
from ..languages import canonical
from ..metrics import Metrics
from ..storage import SessionChange, SessionNotFound, SessionRecord, Store
from ..storage.base import MAIN_DOC, NOTES_DOC
from .follow import NoPeers, Peers
from .loader import load_document
from .options import RoomOptions
from .protocol import CloseCode
from .room import NotesRoom, SessionRoom, log_exception

log = logging.getLogger(__name__)


def notes_room(session_id: str) -> str:
    """The registry name of a session's notes room (session ids never contain a slash)."""
    return f"{session_id}/{NOTES_DOC}"


class SessionServer(WebsocketServer):
    rooms: dict[str, SessionRoom]  # type: ignore[assignment]

    def __init__(self, store: Store, options: RoomOptions, metrics: Metrics | None = None) -> None:
        super().__init__(rooms_ready=True, auto_clean_rooms=False, log=log, exception_handler=log_exception)
        self.store = store
        self.options = options
        self.metrics = metrics or Metrics()
        self._locks: dict[str, anyio.Lock] = {}
        self._unload_scopes: dict[str, anyio.CancelScope] = {}
        self._unloading: dict[str, anyio.Event] = {}
        self.peers: Peers = NoPeers()  # the other processes (the cluster sets itself here)

    async def get_room(self, name: str) -> SessionRoom:
        room = self.rooms.get(name)
        if room is not None and room.broken:  # it holds updates that never committed: reload from storage
            await self.unload(name)
            room = None
        if room is not None:
            self._cancel_unload(name)
            return room
        lock = self._locks.setdefault(name, anyio.Lock())
        try:
            async with lock:  # one loader per session; later callers find the room ready
                unloading = self._unloading.get(name)
                if unloading is not None:  # its last commits must land before storage is read
                    await unloading.wait()
                room = self.rooms.get(name)
                if room is None:
                    room = await self._load(name)
        finally:
            if self._locks.get(name) is lock and not lock.locked():
                self._locks.pop(name, None)
        self._cancel_unload(name)
        return room

    async def _load(self, name: str) -> SessionRoom:
        """Load and start a room. Rows other processes commit meanwhile are kept from before the read
        and applied after it (those it already holds are skipped): no window between the two."""
        with self.peers.buffering(name) as early:
            sid, notes = name.removesuffix(f"/{NOTES_DOC}"), name.endswith(f"/{NOTES_DOC}")
            session = await self.store.get_session(sid)
            if session is None:
                raise SessionNotFound(sid)
            doc, last_seq, snapshot_seq, held, small = await load_document(self.store, sid,
                                                                           NOTES_DOC if notes else MAIN_DOC)
            if not notes:
                await self._language_follows(session, doc)
            size = len(held.full_state(doc)) if small else await anyio.to_thread.run_sync(
                lambda: len(held.full_state(doc)))
            # Notes stay writable after the session ends: the interviewer writes them up then.
            room = (NotesRoom if notes else SessionRoom)(
                sid, doc, self.store, self.options,
                last_seq=last_seq, snapshot_seq=snapshot_seq, ended=not notes and session.status == "ended",
                locked=not notes and session.locked,
                metrics=self.metrics,
                doc_size=size, held=held, peers=self.peers,
            )
            assert self._task_group is not None, "SessionServer is not running"
            await self._task_group.start(room.start)
            self.rooms[name] = room  # from here on, the bus finds the room itself
        room.receive(early)
        return room

    async def _language_follows(self, session: SessionRecord, doc: Doc[Any]) -> None:
        """An editor's last ``meta.language`` switch may have been stored in the log but not yet in
        the row (the process died in between): bring the row along once, at load."""
        value = doc.get(META, type=Map).get("language")
        language = canonical(value) if isinstance(value, str) else None
        if language is not None and language != session.language:
            await self.store.change_session(SessionChange(session.id, {"language": language}))

    @asynccontextmanager
    async def room(self, name: str) -> AsyncIterator[SessionRoom]:
        """Hold a session's room loaded (a WebSocket for its lifetime, a REST operation for one request)."""
        room = await self.hold(name)
        try:
            yield room
        finally:
            self.release(name, room)

    async def hold(self, name: str) -> SessionRoom:
        """``room`` without a context manager object (a WebSocket holds one for its whole life):
        every ``hold`` is paired with one ``release``."""
        room = await self.get_room(name)
        room.holds += 1
        return room

    def release(self, name: str, room: SessionRoom) -> None:
        room.holds -= 1
        self._maybe_schedule_unload(name, room)

    # -- unloading -----------------------------------------------------------------------------
    def _cancel_unload(self, name: str) -> None:
        scope = self._unload_scopes.pop(name, None)
        if scope is not None:
            scope.cancel()

    def _maybe_schedule_unload(self, name: str, room: SessionRoom) -> None:
        if room.clients or room.holds or name in self._unload_scopes or self.rooms.get(name) is not room:
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
        if scope.cancel_called or room.clients or room.holds:
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
                    if not (room.gone or room.broken):
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

    async def drop(self, name: str, code: int = CloseCode.SESSION_NOT_FOUND, reason: str = "session deleted") -> None:
        """Close every socket of a session (both its documents) and unload it without a snapshot (it is
        being deleted)."""
        for key in (name, notes_room(name)):
            self._cancel_unload(key)
            room = self.rooms.get(key)
            if room is not None:
                room.mark_gone()
                room.close_all(code, reason)
                await self.unload(key)

    async def close_all_rooms(self) -> None:
        """Shutdown: flush every room to the store."""
        with anyio.CancelScope(shield=True):
            for name in list(self.rooms):
                self._cancel_unload(name)
                await self.unload(name)

