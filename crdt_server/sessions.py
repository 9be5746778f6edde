"""Session operations shared by REST and the sync layer: create, read text, edit as CRDT updates.

Why edits are built on a scratch copy and *submitted*: every change to a live document goes
through the room's write-ahead pipeline (commit, then apply, then broadcast), REST included.
Text is never re-seeded: saved code becomes a minimal edit (common prefix/suffix) of the
existing Y.Text, so editors keep their cursors and nothing is duplicated.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import replace
from typing import Any

from pycrdt import Array, Doc, Map, Text

from .storage import EventRecord, SessionRecord, Store
from .sync import SessionRoom, SessionServer, load_document

from .document import MAX_RUNS, META, RUNS, TEXT, edit_update, initial_document, read_text, text_edit  # noqa: F401


def new_session_id() -> str:
    """128 random bits, URL-safe (the JS client does not encode the room name)."""
    return secrets.token_urlsafe(16)


async def create_session(store: Store, *, title: str, language: str, code: str, ttl: float) -> SessionRecord:
    now = time.time()
    record = SessionRecord(new_session_id(), title, language, "active", now, now, now + ttl)
    event = EventRecord(record.id, "created", {"title": title, "language": language}, ts=now)
    await store.create_session(record, initial_document(title, language, code), event)
    return record


async def submit_changes(
    room: SessionRoom, *, code: str | None = None, meta: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> str:
    """Submit changes through a loaded room's write-ahead pipeline; returns the resulting text."""
    update = edit_update(room.ydoc, code=code, meta=meta, run=run)
    if update is not None:
        await room.submit(update, role="server")
    return read_text(room.ydoc)


async def document_view(server: SessionServer, store: Store, session_id: str) -> tuple[str, dict[str, Any]]:
    """(text, meta map) of the live document, or of the stored one if no room is loaded."""
    room = server.rooms.get(session_id)
    if room is not None:
        doc = room.ydoc
    else:
        doc, _, _ = await load_document(store, session_id)
    return read_text(doc), read_meta(doc)


def read_meta(doc: Doc) -> dict[str, Any]:
    try:
        return dict(doc.get(META, type=Map).to_py() or {})
    except Exception:  # a client may have replaced "meta" with something odd; REST falls back to the record
        return {}


_LANGUAGE = re.compile(r"^[a-z][a-z0-9+#._-]{0,31}$")


def effective_session(record: SessionRecord, meta: dict[str, Any]) -> SessionRecord:
    """The session as editors see it: title and language from the document's ``meta`` map when an
    editor changed them there (and they are valid), status always from the record (it is enforced)."""
    title, language = meta.get("title"), meta.get("language")
    changes: dict[str, Any] = {}
    if isinstance(title, str) and len(title) <= 200 and title != record.title:
        changes["title"] = clean_str(title)
    if isinstance(language, str) and _LANGUAGE.match(language) and language != record.language:
        changes["language"] = language
    return replace(record, **changes) if changes else record


# -- presence ----------------------------------------------------------------------------------

MAX_NAME = 100
MAX_CURSOR_DEPTH = 16


from .presence import clean_json, clean_str  # noqa: E402,F401


def presence_state(room: SessionRoom, client_id: int) -> Any:
    entry = room.presence.get(client_id)
    if entry is None or entry.removed:
        return None
    try:
        return json.loads(entry.state)
    except (ValueError, RecursionError):
        return None


def participants(room: SessionRoom) -> list[dict[str, Any]]:
    """One entry per live connection (oldest first) with name/color/cursor from its awareness state.

    The server has no awareness entry of its own, so it is never listed. Everything taken from
    awareness is client-controlled: only well-typed values are reported.
    """
    out = []
    for conn in sorted(room.clients, key=lambda c: c.connected_at):
        entry: dict[str, Any] = {
            "connection_id": conn.id, "role": conn.role, "connected_at": conn.connected_at,
            "name": None, "color": None, "cursor": None,
        }
        for client_id in sorted(conn.client_ids):
            state = presence_state(room, client_id)
            if not isinstance(state, dict):
                continue
            user = state.get("user")
            if isinstance(user, dict):
                if entry["name"] is None and isinstance(user.get("name"), str):
                    entry["name"] = clean_str(user["name"], MAX_NAME)
                if entry["color"] is None and isinstance(user.get("color"), str):
                    entry["color"] = clean_str(user["color"], MAX_NAME)
            if entry["cursor"] is None and state.get("cursor") is not None:
                try:
                    entry["cursor"] = clean_json(state["cursor"])
                except (ValueError, RecursionError):
                    pass
        out.append(entry)
    return out


def connection_names(room: SessionRoom | None) -> dict[str, str]:
    """Connection id -> display name, for the live connections that have one."""
    if room is None:
        return {}
    return {p["connection_id"]: p["name"] for p in participants(room) if p["name"]}
