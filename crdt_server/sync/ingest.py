"""The room's guarded ingest path and the history events editors' changes cause.

Most updates take the room's fast path (commit, apply, broadcast). An update the guard
(``sync/guard.py``) cannot clear takes this one: applied first while ``meta`` and ``runs`` are
watched, what the server owns compensated at once, update and compensation committed together,
then broadcast. Kept apart from ``room.py`` so the room reads as its lifecycle and fast path.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pycrdt import Doc, Map

from ..document import META
from ..domain import EventType
from ..languages import canonical
from ..primitives import Event
from ..storage import EventRecord, SessionChange, Store, UpdateRecord
from ..storage.base import MAIN_DOC
from . import protocol as p
from .batch import Batch, Pending
from .confirm import send_confirmations
from .connection import SERVER, Connection, Origin
from .guard import DocumentGuard, Guarded, apply_guarded
from .neutral import notice
from .surrogates import repair
from .updates import decode

log = logging.getLogger("crdt_server.sync.room")


class GuardedIngest:
    """Mixed into ``SessionRoom``: the guarded path and the editor events (see the module docstring)."""

    session_id: str
    doc_key: str
    last_seq: int
    _committed: list[tuple[int, bytes]]
    ydoc: Doc[Any]
    store: Store
    guard: DocumentGuard
    broken: bool
    clients: set[Connection]
    editor_event_limit: int
    persist: bool
    _meta: Map[Any]
    _settled: Event
    _languages: list[tuple[Origin, str, str]]
    _record: Callable[[Pending], UpdateRecord]
    _commit: Callable[[Batch, list[UpdateRecord], list[SessionChange]], Awaitable[bool]]
    _apply: Callable[[Pending], bool]
    _broadcast: Callable[[bytes, Connection | None], None]
    _after_commit: Callable[[Batch], Awaitable[None]]
    _recover: Callable[[list[int]], Awaitable[None]]

    async def _apply_and_commit(self, batch: Batch) -> None:
        """The guarded path: apply first (watching what each update really changes), compensate what
        editors may not change, then commit update and compensation together, then broadcast.

        Sync step 1 answers wait meanwhile (``_settled``), so nobody is sent an uncommitted state; if
        the commit fails the room is marked broken and reloaded from storage.
        """
        self._settled = Event()
        try:
            records: list[UpdateRecord] = []
            changes = [i.change for i in batch.items if i.change is not None]
            # (item, compensation, both merged); (None, repair, None) for the server's surrogate repairs
            sends: list[tuple[Pending | None, bytes | None, bytes | None]] = []
            failed: list[int] = []  # rows (positions in records) of updates the CRDT library refused
            for item in batch.items:
                if item.verdict is None or not item.verdict.guarded:
                    records.append(self._record(item))
                    if self._apply(item):
                        sends.append((item, None, None))
                    else:
                        failed.append(len(records) - 1)
                    continue
                if item.verdict.splits and (repaired := self._repair(item)) is not None:
                    records.append(UpdateRecord(self.session_id, repaired, SERVER.role, SERVER.conn_id))
                    sends.append((None, repaired, None))
                result = self._apply_watched(item)
                if result is None:  # stored, like the fast path's, but sent to nobody
                    records.append(self._record(item))
                    failed.append(len(records) - 1)
                    continue
                compensation, merged, reverted = result.compensation, result.settled, result.reverted
                if compensation is None or merged is None:
                    records.append(self._record(item))
                else:
                    # One row, the update with its compensation as the document holds them: the log
                    # (playback, the timeline) never holds what was undone.
                    records.append(UpdateRecord(self.session_id, merged, item.origin.role, item.origin.conn_id,
                                                item.origin.name))
                    self.guard.applied(decode(compensation), False, compensation)
                if reverted:
                    log.warning("session %s: reverted a %s's change to %s", self.session_id, item.origin.role,
                                ", ".join(sorted(reverted)))
                    event = self._editor_event(item, EventType.UPDATE_REVERTED, {"touched": sorted(reverted)})
                    if event is not None:
                        changes.append(SessionChange(self.session_id, events=(event,)))
                sends.append((item, compensation, merged))
            if not await self._commit(batch, records, changes):
                self.broken = True
                return
            if failed:
                await self._recover([self._committed[i][0] for i in failed])
            for sent, compensation, merged in sends:
                if sent is None:  # a repair: everyone gets it first, the author included
                    assert compensation is not None
                    self._broadcast(compensation, None)
                    continue
                item = sent
                if compensation is None or merged is None:
                    self._broadcast(item.update, item.conn)
                    continue
                # the others get the update with its compensation (nothing undone ever shows);
                # its author gets the compensation
                self._broadcast(merged, item.conn)
                if item.conn is not None:
                    item.conn.enqueue(p.sync_frame(p.SYNC_UPDATE, compensation))
            send_confirmations(batch)  # after the compensations: its author then holds the settled state
            await self._after_commit(batch)
        finally:
            self._settled.set()

    def _repair(self, item: Pending) -> bytes | None:
        """Delete and re-insert the astral characters the update splits (``sync/surrogates.py``),
        before it is applied; the server's update doing so, applied already."""
        assert item.verdict is not None and item.verdict.splits
        try:
            update = repair(self.ydoc, item.verdict.splits)
        except BaseException as exc:
            if not p.is_crdt_failure(exc):
                raise
            log.warning("session %s: surrogate repair failed: %r", self.session_id, exc)
            return None
        if update is not None:
            log.debug("session %s: a %s's update splits %d astral character(s): deleted and re-inserted first",
                     self.session_id, item.origin.role, len(item.verdict.splits))
            self.guard.applied(decode(update), False, update)
        return update

    def _apply_watched(self, item: Pending) -> Guarded | None:
        """What applying the update came to; None if the CRDT library refused it."""
        assert item.verdict is not None
        before = self._meta.get("language")
        try:
            result = apply_guarded(self.ydoc, item.update, valid_language, code_frozen=item.verdict.code_frozen)
        except BaseException as exc:
            if not p.is_crdt_failure(exc):
                raise
            log.warning("session %s: update could not be applied: %r", self.session_id, exc)
            return None
        if f"{META}.language" not in result.reverted:
            self._note_language(item.origin, before)
        item.applied = True
        item.held = self.guard.applied(item.decoded, item.verdict.pending, item.update, admitted=True)
        return result

    def _neutralised(self, item: Pending) -> SessionChange | None:
        """An editor's update held content the server cannot keep exactly, now stored as deleted
        (``sync/neutral.py``): tell its author why (its copy drops the content when it applies the
        confirmation's delete set) and record it in the shared document's history."""
        verdict = item.verdict
        assert verdict is not None and verdict.neutralised and item.conn is not None
        reasons = sorted({bad.reason for bad in verdict.neutralised})
        log.warning("session %s: a %s's update held %d item(s) the server cannot keep exactly (%s); stored as deleted",
                    self.session_id, item.origin.role, len(verdict.neutralised), "; ".join(reasons))
        item.conn.enqueue(p.permission_denied_frame(notice(verdict.neutralised)))
        if self.doc_key != MAIN_DOC:  # the notes are private: nothing of them reaches the history
            return None
        event = self._editor_event(item, EventType.CONTENT_DELETED, {"items": len(verdict.neutralised),
                                                                     "reasons": reasons})
        return None if event is None else SessionChange(self.session_id, events=(event,))

    def _editor_event(self, item: Pending, kind: EventType, data: dict[str, Any]) -> EventRecord | None:
        """A history event caused by an editor's update, at most ``editor_events`` per connection."""
        conn = item.conn
        if conn is not None:
            if conn.editor_events >= self.editor_event_limit:
                return None
            conn.editor_events += 1
        return EventRecord(self.session_id, kind, {"role": item.origin.role, "connectionId": item.origin.conn_id,
                                                   "name": item.origin.name or None, **data})

    def _note_language(self, origin: Origin, before: Any) -> None:
        """Compared before/after an editor's update, not observed: building pycrdt's map event panics
        in yrs (``event_keys``) on some crafted updates, after the update was applied."""
        value = self._meta.get("language")
        if origin is SERVER or value == before:
            return
        language = canonical(value) if isinstance(value, str) else None  # the registry, as REST has it
        if language is not None:
            self._languages.append((origin, before if isinstance(before, str) else "", language))

    async def _language_changes(self) -> None:
        """An editor switched ``meta.language``: the session row, which REST reads, follows, and the
        history records who did it (bounded per connection)."""
        if not self._languages or not self.persist:
            self._languages.clear()
            return
        changes, self._languages = self._languages, []
        events = []
        for origin, old, new in changes:
            conn = next((c for c in self.clients if c.id == origin.conn_id), None)
            if conn is None or conn.editor_events < self.editor_event_limit:
                if conn is not None:
                    conn.editor_events += 1
                events.append(EventRecord(self.session_id, EventType.LANGUAGE_CHANGED,
                                          {"from": old or None, "to": new, "by": origin.role}))
        try:
            await self.store.change_session(SessionChange(self.session_id, {"language": changes[-1][2]}, tuple(events)))
        except Exception as exc:  # noqa: BLE001 - the document has it; the next load brings the row along
            log.warning("session %s: language change not recorded: %r", self.session_id, exc)


def valid_language(value: Any) -> bool:
    """A language id (or alias) of the registry (``crdt_server/languages.py``)."""
    return isinstance(value, str) and canonical(value) is not None
