"""SessionService: every session operation, whichever transport asks for it.

The HTTP handlers (``api/``) and the WebSocket handler only authorise, parse and shape answers;
what an operation *does* is here: which row fields, document changes and history events belong
together (committed in one store transaction), what an ended session refuses, and what a run
records. The session row is the one source of truth for title, language and status; the
document's ``meta`` map is the server's projection of it for editors (an editor's
``meta.language`` switch is carried back into the row by the room).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from pycrdt import Text

from . import playback, presence, timeline
from .document import META_KEYS, NOTES, edit_update, initial_document, read_text, run_entry
from .domain import EventType, Role, changed_event
from .execution import ExecutionError, ExecutionService, RunResult, SandboxUnavailable
from .lifetimes import Lifetimes
from .logs import log_run
from .metrics import Metrics, run_outcome
from .storage import EventRecord, SessionChange, SessionNotFound, SessionRecord, Store
from .storage.base import NOTES_DOC
from .sync import Connection, SessionRoom, SessionServer, load_document
from .sync.awareness import Owner
from .sync.protocol import CloseCode
from .sync.server import notes_room

log = logging.getLogger(__name__)


class SessionEnded(Exception):
    """The session has ended: it is read-only until reopened."""


class SessionLocked(Exception):
    """The interviewer has locked the editor: the candidate may not change the code."""


class RunDisabled(Exception):
    """The interviewer has switched Run off for the candidate."""


class TokenRevoked(Exception):
    """The token is of an older generation: the session's tokens were re-issued since."""


@dataclass(frozen=True)
class SessionView:
    record: SessionRecord
    code: str


def new_session_id() -> str:
    """128 random bits, URL-safe (the JS client does not encode the room name)."""
    return secrets.token_urlsafe(16)


class SessionService:
    def __init__(
        self, store: Store, rooms: SessionServer, *, lifetimes: Lifetimes, execution: ExecutionService | None = None,
        metrics: Metrics | None = None,
        max_participant_events: int = 200,
    ) -> None:
        self.store = store
        self.rooms = rooms
        self.lifetimes = lifetimes
        self.execution = execution
        self._sockets: dict[str, dict[Connection, int]] = {}  # session -> live socket -> its token generation
        self.metrics = metrics or rooms.metrics
        self.max_participant_events = max_participant_events
        self._joins_recorded: dict[tuple[str, Role], int] = {}  # since this process started
        self._recorded_conns: set[str] = set()  # live connections whose join was recorded
        self.timelines = timeline.Timelines()

    # -- sessions ------------------------------------------------------------------------------
    async def create(self, *, title: str, language: str, code: str, expires_at: float | None = None) -> SessionRecord:
        """A new session, kept at least until ``expires_at`` (``InvalidExpiry`` if not allowed)."""
        now = time.time()
        keep = self.lifetimes.requested(expires_at, now)
        expiry = self.lifetimes.expires_at(status="active", keep_until=keep, updated_at=now, ended_at=None)
        record = SessionRecord(new_session_id(), title, language, "active", now, now, expiry, keep_until=keep)
        event = EventRecord(record.id, EventType.CREATED, {"title": title, "language": language}, ts=now)
        await self.store.create_session(record, initial_document(title, language, code), event)
        return record

    async def get(self, sid: str) -> SessionRecord:
        """The session's row; ``SessionNotFound`` if it does not exist or has expired (the sweeper deletes it soon)."""
        record = await self.store.get_session(sid)
        if record is None or record.expires_at <= time.time():
            raise SessionNotFound(sid)
        return record

    async def view(self, sid: str) -> SessionView:
        """The session and its text: the live document's, or the stored one's when nobody has it loaded."""
        record = await self.get(sid)
        room = self.rooms.rooms.get(sid)
        doc = room.ydoc if room is not None else (await load_document(self.store, sid))[0]
        return SessionView(record, read_text(doc))

    async def notes(self, sid: str) -> str:
        """The interviewer's private notes: the live notes document's, or the stored one's."""
        await self.get(sid)
        room = self.rooms.rooms.get(notes_room(sid))
        doc = room.ydoc if room is not None else (await load_document(self.store, sid, NOTES_DOC))[0]
        return str(doc.get(NOTES, type=Text))

    async def patch(self, sid: str, requested: Mapping[str, Any], by: Role) -> SessionRecord:
        """Change title/language/status/lock/Run switch: row, ``meta`` and one event per field commit together."""
        async with self._room(sid) as room:
            current = await self.get(sid)
            changed = {k: v for k, v in requested.items() if getattr(current, k) != v}
            if current.status == "ended" and changed and changed.get("status") != "active":
                raise SessionEnded(sid)
            if not changed:
                return current
            events = tuple(
                EventRecord(sid, changed_event(k), {"from": getattr(current, k), "to": v, "by": by})
                for k, v in changed.items()
            )
            fields: dict[str, Any] = {**changed, **self._touch()}
            if "status" in changed:  # an ended session is kept for --ended-retention from now
                fields["ended_at"] = fields["updated_at"] if changed["status"] == "ended" else None
            meta = {META_KEYS[k]: v for k, v in changed.items()}
            await self._commit(room, SessionChange(sid, fields, events), meta=meta)
            room.ended, room.locked = fields.get("status", current.status) == "ended", fields.get("locked", current.locked)
        self.rooms.peers.announce(sid, "row")  # the other processes' rooms follow (status, lock)
        return await self.get(sid)

    async def follow_row(self, sid: str) -> None:
        """Another process changed the session's row: what this process's live rooms enforce follows."""
        record = await self.store.get_session(sid)
        if record is None:
            return
        room = self.rooms.rooms.get(sid)
        if room is not None:
            room.ended, room.locked = record.status == "ended", record.locked
        self.close_revoked(sid, record.token_generation)

    async def save_code(self, sid: str, code: str, language: str | None, by: Role) -> SessionView:
        """Apply new text as a minimal edit (never a re-seed); a language switch goes with it."""
        async with self._room(sid) as room:
            current = await self.get(sid)
            if current.status == "ended":
                raise SessionEnded(sid)
            if current.locked and by == "candidate":
                raise SessionLocked(sid)
            fields: dict[str, Any] = self._touch()
            events = [EventRecord(sid, EventType.CODE_SAVED, {"by": by, "length": len(code)})]
            meta = None
            if language and language != current.language:
                meta = fields["language"] = language
                events.append(EventRecord(sid, EventType.LANGUAGE_CHANGED,
                                          {"from": current.language, "to": language, "by": by}))
            await self._commit(room, SessionChange(sid, fields, tuple(events)), code=code,
                               meta={"language": meta} if meta else None)
            return SessionView(await self.get(sid), read_text(room.ydoc))

    async def delete(self, sid: str) -> None:
        """Delete the data, then close every socket: later requests and reconnects find nothing."""
        await self.get(sid)
        await self.store.delete_session(sid)
        self.rooms.peers.announce(sid, "drop", CloseCode.SESSION_NOT_FOUND)
        await self.forget(sid, CloseCode.SESSION_NOT_FOUND, "session deleted")

    async def forget(self, sid: str, code: int, reason: str) -> None:
        """The session is gone (here or on another process): close its sockets, drop what is kept of it.
        Every socket admitted to it closes, also one not serving yet (its join event being committed):
        the room's drop closes only the sockets it serves."""
        for conn in list(self._sockets.get(sid, ())):
            conn.close(code, reason)
        await self.rooms.drop(sid, code, reason)
        self._forget_joins(sid)

    # -- tokens --------------------------------------------------------------------------------
    async def check_token(self, sid: str, generation: int) -> SessionRecord:
        """The rule for every signed token, REST and WebSocket alike: its session exists (not
        expired) and the token is of the current generation (``SessionNotFound``, ``TokenRevoked``)."""
        record = await self.get(sid)
        if generation != record.token_generation:
            raise TokenRevoked(sid)
        return record

    async def reissue_tokens(self, sid: str, by: Role) -> int:
        """Revoke every token of the session; the new generation to sign tokens with. Sockets that
        came in with an older token are closed with 4401 (their clients stop reconnecting)."""
        await self.get(sid)
        generation = await self.store.reissue_tokens(sid, EventRecord(sid, EventType.TOKENS_REISSUED, {"by": by}))
        if generation is None:
            raise SessionNotFound(sid)
        self.close_revoked(sid, generation)
        self.rooms.peers.announce(sid, "tokens", generation)
        return generation

    def close_revoked(self, sid: str, generation: int) -> None:
        """Close this process's sockets admitted with a token older than ``generation`` (4401)."""
        for conn, admitted in list(self._sockets.get(sid, {}).items()):
            if admitted < generation:
                conn.close(CloseCode.UNAUTHORIZED, "token revoked: the session's tokens were re-issued")

    @contextmanager
    def tracking(self, conn: Connection, generation: int) -> Iterator[None]:
        """Remember a socket's token generation while it is open, so a re-issue can close it."""
        sockets = self._sockets.setdefault(conn.session_id, {})
        sockets[conn] = generation
        try:
            yield
        finally:
            sockets.pop(conn, None)
            if not sockets:
                self._sockets.pop(conn.session_id, None)

    async def expire(self) -> int:
        """Delete sessions past their ``expires_at`` (inactive, or retention over); sockets get 4410."""
        expired = await self.store.expired_sessions(time.time())
        for sid in expired:
            await self.forget(sid, CloseCode.SESSION_EXPIRED, "session expired")
            await self.store.delete_session(sid)
            self.rooms.peers.announce(sid, "drop", CloseCode.SESSION_EXPIRED)
        return len(expired)

    def _forget_joins(self, sid: str) -> None:
        """Drop what this process keeps in memory for a session that is gone (join marks, its timeline)."""
        self.timelines.forget(sid)
        for key in [k for k in self._joins_recorded if k[0] == sid]:
            del self._joins_recorded[key]

    async def list_sessions(self, after: int, limit: int) -> tuple[list[tuple[int, SessionRecord, int]], bool]:
        """A page of sessions in creation order (cursor, session, live connections here), and whether
        more follow."""
        rows = await self.store.list_sessions(after, limit + 1)
        page = [(cursor, record, len(room.clients) if (room := self.rooms.rooms.get(record.id)) else 0)
                for cursor, record in rows[:limit]]
        return page, len(rows) > limit

    # -- Run -----------------------------------------------------------------------------------
    def runner(self) -> ExecutionService:
        """The execution service, or ``SandboxUnavailable`` when Run is off or has no sandbox here."""
        if self.execution is None or self.execution.mode == "unavailable":
            raise SandboxUnavailable("code execution is not available on this server")
        return self.execution

    async def run(self, sid: str, by: Role, *, stdin: str, timeout: float | None) -> tuple[RunResult, str]:
        """Run a snapshot of the live text in the session's language; the result goes into ``runs``."""
        runner = self.runner()
        view = await self.view(sid)  # the snapshot: live text and language, now
        if view.record.status == "ended":
            raise SessionEnded(sid)
        if not view.record.run_enabled and by == "candidate":
            raise RunDisabled(sid)
        language = view.record.language
        run_id = secrets.token_hex(8)
        digest = hashlib.sha256(view.code.encode("utf-8")).hexdigest()
        started = time.time()
        await self.record(EventRecord(sid, EventType.RUN_STARTED,
                                      {"runId": run_id, "by": by, "language": language, "sha256": digest}, ts=started))
        try:
            result = await self._run(sid, runner, language=language, code=view.code, stdin=stdin, timeout=timeout)
        except ExecutionError as exc:
            await self.record(EventRecord(sid, EventType.RUN_REFUSED, {"runId": run_id, "reason": exc.code}))
            raise
        finished = EventRecord(sid, EventType.RUN_FINISHED, {
            "runId": run_id, "exitCode": result.exit_code, "durationMs": result.duration_ms,
            "timedOut": result.timed_out, "sha256": digest,
        })
        async with self._room(sid) as room:  # SessionNotFound if the session was deleted while running
            await self._commit(room, SessionChange(sid, events=(finished,)), run=run_entry(run_id, by, started, result))
        return result, run_id

    async def run_code(self, *, language: str, code: str, stdin: str, timeout: float | None) -> RunResult:
        """Run code that belongs to no session (``POST /api/execute``)."""
        return await self._run(None, self.runner(), language=language, code=code, stdin=stdin, timeout=timeout)

    async def _run(self, sid: str | None, runner: ExecutionService, *, language: str, code: str, stdin: str,
                   timeout: float | None) -> RunResult:
        """Every run goes through here: counted, timed and logged once each, whatever happens (never the
        code or output)."""
        started = time.monotonic()
        try:
            result = await self.metrics.run(runner, language=language, code=code, stdin=stdin, timeout=timeout,
                                            session_key=sid)
        except ExecutionError as exc:
            log_run(sid, language, f"refused:{exc.code}", (time.monotonic() - started) * 1000)
            raise
        log_run(sid, result.language, run_outcome(result), result.duration_ms)
        return result

    # -- participants and history --------------------------------------------------------------
    async def joined(self, conn: Connection) -> None:
        """Recorded for the first ``max_participant_events`` connections per session and role (since
        the server started): a loop of connects (an observer link needs no more) cannot fill the history."""
        key = (conn.session_id, conn.role)
        count = self._joins_recorded.get(key, 0)
        if count >= self.max_participant_events:
            return
        self._joins_recorded[key] = count + 1
        self._recorded_conns.add(conn.id)
        await self.record(EventRecord(conn.session_id, EventType.PARTICIPANT_JOINED,
                                      {"role": conn.role, "connectionId": conn.id}))

    async def left(self, conn: Connection) -> None:
        """Only for a recorded join: the history's joins and leaves stay paired."""
        if conn.id not in self._recorded_conns:
            return
        self._recorded_conns.discard(conn.id)
        await self.record(EventRecord(conn.session_id, EventType.PARTICIPANT_LEFT,
                                      {"role": conn.role, "connectionId": conn.id, "name": conn.name}))

    async def record(self, *events: EventRecord) -> None:
        """Append history events; a session deleted meanwhile keeps no orphan rows."""
        try:
            await self.store.append_events(events)
        except Exception as exc:  # noqa: BLE001 - the session may just have been deleted
            log.debug("events %s not stored: %r", [e.type for e in events], exc)

    async def participants(self, sid: str) -> list[dict[str, Any]]:
        """One entry per live connection (oldest first) with name/color/cursor from its presence."""
        await self.get(sid)
        if self.rooms.peers.follows:  # several processes: every one of them tells its connections
            async with self.rooms.room(sid) as held:
                await self.rooms.peers.gather_presence(held)
                return _participants(held)
        room = self.rooms.rooms.get(sid)
        return [] if room is None else _participants(room)

    async def history(self, sid: str, after: int, limit: int) -> tuple[list[EventRecord], bool]:
        """One page of events (oldest first) and whether more follow; joins carry the name the
        connection announced later (from the live connection or its ``participant_left``)."""
        await self.get(sid)
        events = await self.store.read_events(sid, after, limit + 1)
        more = len(events) > limit
        events = events[:limit]
        names = await self._participant_names(sid, events)
        return [_with_name(e, names) for e in events], more

    # -- playback (crdt_server/playback.py) ----------------------------------------------------
    async def playback(self, sid: str, *, at: float | None = None, seq: int | None = None) -> playback.Moment:
        return await playback.moment(self.store, await self.get(sid), at=at, seq=seq)

    async def playback_updates(self, sid: str, from_seq: int, to_seq: int | None) -> tuple[bytes, int | None]:
        return await playback.stream(self.store, await self.get(sid), from_seq, to_seq)

    async def _participant_names(self, sid: str, page: list[EventRecord]) -> dict[str, str]:
        wanted = {e.data.get("connectionId") for e in page
                  if e.type == EventType.PARTICIPANT_JOINED and not e.data.get("name")}
        wanted.discard(None)
        if not wanted:
            return {}
        room = self.rooms.rooms.get(sid)
        names = {c.id: c.name for c in (room.clients if room else ()) if c.id in wanted and c.name}
        for e in page:
            if e.type == EventType.PARTICIPANT_LEFT and e.data.get("name"):
                names.setdefault(e.data["connectionId"], e.data["name"])
        after = page[-1].seq
        for _ in range(20):  # bounded look-ahead: 20 000 events
            if wanted <= names.keys():
                break
            later = await self.store.read_events(sid, after, 1000)
            for e in later:
                if e.type == EventType.PARTICIPANT_LEFT and e.data.get("connectionId") in wanted and e.data.get("name"):
                    names.setdefault(e.data["connectionId"], e.data["name"])
            if len(later) < 1000:
                break
            after = later[-1].seq
        return names

    async def timeline(self, sid: str, *, bucket: int, paste_threshold: int) -> dict[str, Any]:
        """Who typed what and when (``crdt_server/timeline.py``): the log's new rows and events are
        replayed onto the session's cached replay, in a worker thread."""
        await self.get(sid)
        replay = await timeline.caught_up(self.store, sid, self.timelines.get(sid, paste_threshold))
        room = self.rooms.rooms.get(sid)
        live = {c.id: c.name for c in room.clients if c.name} if room is not None else {}
        return await timeline.answer(replay, bucket, live)

    # -- helpers -------------------------------------------------------------------------------
    @asynccontextmanager
    async def _room(self, sid: str) -> AsyncIterator[SessionRoom]:
        await self.get(sid)
        async with self.rooms.room(sid) as room:
            yield room

    def _touch(self) -> dict[str, float]:
        """Activity: the store derives ``expires_at`` from it (``crdt_server/lifetimes.py``)."""
        return {"updated_at": time.time()}

    async def _commit(
        self, room: SessionRoom, change: SessionChange, *, code: str | None = None,
        meta: Mapping[str, Any] | None = None, run: Mapping[str, Any] | None = None,
    ) -> None:
        """The document edit and the row/event change, through the room's write-ahead pipeline as one
        transaction (or the change alone when the document already says it)."""
        update = edit_update(room.ydoc, code=code, meta=meta, run=run)
        if update is not None:
            await room.submit(update, change)
        elif await self.store.change_session(change) is None:
            raise SessionNotFound(room.session_id)


def _participants(room: SessionRoom) -> list[dict[str, Any]]:
    """One entry per connection (oldest first), here or on another process, with name/color/cursor."""
    owners: list[Owner] = [*room.clients, *room.presence.remote.values()]
    return [
        {"connection_id": conn.id, "role": conn.role, "connected_at": conn.connected_at,
         **presence.merge(room.presence.summaries(conn))}
        for conn in sorted(owners, key=lambda c: c.connected_at)
    ]


def _with_name(e: EventRecord, names: Mapping[str, str]) -> EventRecord:
    if e.type not in (EventType.PARTICIPANT_JOINED, EventType.PARTICIPANT_LEFT):
        return e
    name = e.data.get("name") or names.get(e.data.get("connectionId", ""))
    return EventRecord(e.session_id, e.type, {**e.data, "name": name}, seq=e.seq, ts=e.ts)
