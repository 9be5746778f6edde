"""Session operations shared by REST and the sync layer: create, read text, edit as CRDT updates.

Why edits are built on a scratch copy and *submitted*: every change to a live document goes
through the room's write-ahead pipeline (commit, then apply, then broadcast), REST included.
Text is never re-seeded: saved code becomes a minimal edit (common prefix/suffix) of the
existing Y.Text, so editors keep their cursors and nothing is duplicated.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from pycrdt import Array, Doc, Map, Text

from .storage import EventRecord, SessionRecord, Store
from .sync import SessionServer, load_document

TEXT = "code"
META = "meta"
RUNS = "runs"
MAX_RUNS = 20


def new_session_id() -> str:
    """128 random bits, URL-safe (the JS client does not encode the room name)."""
    return secrets.token_urlsafe(16)


def initial_document(title: str, language: str, code: str, status: str = "active") -> bytes:
    doc: Doc = Doc()
    with doc.transaction():
        meta = doc.get(META, type=Map)
        meta["language"] = language
        meta["title"] = title
        meta["status"] = status
        doc.get(RUNS, type=Array)
        text = doc.get(TEXT, type=Text)
        if code:
            text.insert(0, code)
    return doc.get_update()


async def create_session(store: Store, *, title: str, language: str, code: str, ttl: float) -> SessionRecord:
    now = time.time()
    record = SessionRecord(new_session_id(), title, language, "active", now, now, now + ttl)
    event = EventRecord(record.id, "created", {"title": title, "language": language}, ts=now)
    await store.create_session(record, initial_document(title, language, code), event)
    return record


def read_text(doc: Doc) -> str:
    return str(doc.get(TEXT, type=Text))


def text_edit(old: str, new: str) -> tuple[int, int, str]:
    """Minimal single-span edit turning ``old`` into ``new``: (start, delete_count, insert), in characters."""
    limit = min(len(old), len(new))
    start = 0
    while start < limit and old[start] == new[start]:
        start += 1
    end_old, end_new = len(old), len(new)
    while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
        end_old -= 1
        end_new -= 1
    return start, end_old - start, new[start:end_new]


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8"))


def _scratch(doc: Doc) -> Doc:
    scratch: Doc = Doc()
    scratch.apply_update(doc.get_update())
    return scratch


def edit_update(doc: Doc, *, code: str | None = None, meta: dict[str, Any] | None = None, run: dict[str, Any] | None = None) -> bytes | None:
    """The CRDT update that applies the requested changes to ``doc`` (which is not modified); None if no change."""
    scratch = _scratch(doc)
    before = scratch.get_state()
    changed = False
    with scratch.transaction():
        if code is not None:
            text = scratch.get(TEXT, type=Text)
            old = str(text)
            start, delete, insert = text_edit(old, code)
            # pycrdt indexes Y.Text by UTF-8 bytes: convert from characters here, once.
            b_start = _utf8_len(old[:start])
            if delete:
                del text[b_start : b_start + _utf8_len(old[start : start + delete])]
            if insert:
                text.insert(b_start, insert)
            changed = bool(delete or insert)
        m = scratch.get(META, type=Map)
        for key, value in (meta or {}).items():
            if m.get(key) != value:
                m[key] = value
                changed = True
        if run is not None:
            runs = scratch.get(RUNS, type=Array)
            runs.append(Map(run))
            excess = len(runs) - MAX_RUNS
            if excess > 0:
                del runs[0:excess]
            changed = True
    return scratch.get_update(before) if changed else None


async def apply_changes(
    server: SessionServer, session_id: str, *, code: str | None = None, meta: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> str:
    """Apply changes to the live document through its room; returns the resulting text."""
    async with server.room(session_id) as room:
        update = edit_update(room.ydoc, code=code, meta=meta, run=run)
        if update is not None:
            await room.submit(update, role="server")
        return read_text(room.ydoc)


async def current_text(server: SessionServer, store: Store, session_id: str) -> str:
    """The live text if the room is loaded, else rebuilt from storage without loading a room."""
    room = server.rooms.get(session_id)
    if room is not None:
        return read_text(room.ydoc)
    doc, _, _ = await load_document(store, session_id)
    return read_text(doc)
