"""REST endpoints for sessions: create, read, change, delete, code, participants, history.

A REST client and a live editor see the same session: every change goes through the room's
write-ahead pipeline as a CRDT update (``crdt_server.sessions``), and reads take the text and the
``meta`` map from the live document (or the stored one when nobody is connected).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import sessions as ops
from ..storage import EventRecord, SessionRecord
from ..storage.sqlite import SessionGone
from ..sync import SessionNotFound, SessionRoom
from ..web import session_links
from .auth import authorize_session, require_api_key, session_not_found
from .body import read_model
from .context import AppContext, client_ip, ctx
from .errors import ApiError, ApiJSONResponse
from .models import (
    Code,
    CreatedSession,
    CreateSession,
    History,
    HistoryEvent,
    Links,
    Participant,
    Participants,
    SaveCode,
    Session,
    Tokens,
    UpdateSession,
)

ANY_ROLE = ("interviewer", "candidate", "observer")
WRITERS = ("interviewer", "candidate")
INTERVIEWER = ("interviewer",)

MAX_AFTER = 2**62
HISTORY_LIMIT = 100
HISTORY_MAX_LIMIT = 1000


def _json(model: Any, status: int = 200, headers: dict[str, str] | None = None) -> ApiJSONResponse:
    return ApiJSONResponse(model.model_dump(mode="json", by_alias=True), status_code=status, headers=headers)


def _session_model(record: SessionRecord) -> Session:
    return Session(
        id=record.id, title=record.title, language=record.language, status=record.status,  # type: ignore[arg-type]
        created_at=record.created_at, updated_at=record.updated_at, expires_at=record.expires_at,
    )


def _ended() -> ApiError:
    return ApiError(409, "session_ended", "The session has ended and is read-only; PATCH status 'active' reopens it.")


async def load_session(c: AppContext, sid: str) -> SessionRecord:
    """The session's record; 404 if it does not exist or has expired (the sweeper deletes it soon)."""
    record = await c.store.get_session(sid)
    if record is None or record.expires_at <= time.time():
        raise session_not_found()
    return record


@asynccontextmanager
async def live_room(c: AppContext, sid: str) -> AsyncIterator[SessionRoom]:
    """Hold the session's room loaded; a session deleted meanwhile answers 404."""
    try:
        async with c.server.room(sid) as room:
            yield room
    except (SessionNotFound, SessionGone):
        raise session_not_found() from None


async def session_view(c: AppContext, sid: str) -> tuple[SessionRecord, str]:
    """(the session as editors see it, its text)."""
    record = await load_session(c, sid)
    try:
        text, meta = await ops.document_view(c.server, c.store, sid)
    except (SessionNotFound, SessionGone):
        raise session_not_found() from None
    return ops.effective_session(record, meta), text


def _check_code_size(c: AppContext, code: str) -> None:
    if len(code.encode("utf-8")) > c.settings.max_code_size:
        raise ApiError(422, "invalid_field", f"code: longer than {c.settings.max_code_size} bytes")


def _touch(c: AppContext) -> dict[str, float]:
    now = time.time()
    return {"updated_at": now, "expires_at": now + c.settings.session_ttl}


# -- endpoints -------------------------------------------------------------------------------------


async def create_session(request: Request) -> Response:
    """Create a session; returns it with one token per role."""
    require_api_key(request)
    c = ctx(request)
    retry = c.create_limit.take(client_ip(request))
    if retry:
        raise ApiError(429, "rate_limited", "Too many sessions created from this address; retry later.",
                       {"Retry-After": str(max(1, round(retry + 0.5)))})
    body = await read_model(request, CreateSession, allow_empty=True)
    _check_code_size(c, body.code)
    record = await ops.create_session(c.store, title=body.title, language=body.language, code=body.code,
                                      ttl=c.settings.session_ttl)
    tokens = c.signer.issue_all(record.id)
    created = CreatedSession(
        **_session_model(record).model_dump(),
        tokens=Tokens(**tokens),
        links=Links(**session_links(request, record.id, tokens)),
        ws_url=f"/ws/sessions/{record.id}",
    )
    return _json(created, 201, {"Location": f"/api/sessions/{record.id}"})


async def get_session(request: Request) -> Response:
    sid, _ = authorize_session(request, ANY_ROLE)
    record, _ = await session_view(ctx(request), sid)
    return _json(_session_model(record))


async def patch_session(request: Request) -> Response:
    """Change title/language/status; the live document's ``meta`` map changes in the same step."""
    sid, claims = authorize_session(request, INTERVIEWER)
    c = ctx(request)
    body = await read_model(request, UpdateSession, allow_empty=True)
    await load_session(c, sid)
    requested = body.model_dump(exclude_none=True)
    async with live_room(c, sid) as room:
        record = await load_session(c, sid)
        current = ops.effective_session(record, ops.read_meta(room.ydoc))
        changed = {k: v for k, v in requested.items() if getattr(current, k) != v}
        if (room.read_only or record.status == "ended") and changed and changed.get("status") != "active":
            raise _ended()
        if changed:
            updated = await c.store.update_session(sid, **changed, **_touch(c))
            if updated is None:
                raise session_not_found()
            if "status" in changed:
                room.read_only = changed["status"] == "ended"
            try:
                await ops.submit_changes(room, meta=changed)
            except SessionGone:
                raise session_not_found() from None
            await c.store.append_events([
                EventRecord(sid, f"{k}_changed", {"from": getattr(current, k), "to": v, "by": claims.role})
                for k, v in changed.items()
            ])
            current = ops.effective_session(updated, ops.read_meta(room.ydoc))
    return _json(_session_model(current))


async def delete_session(request: Request) -> Response:
    """Delete the data, then close every socket (4404): later requests and reconnects get 404/4404."""
    sid, _ = authorize_session(request, INTERVIEWER)
    c = ctx(request)
    await load_session(c, sid)
    await c.store.delete_session(sid)
    await c.server.drop(sid, 4404, "session deleted")
    return Response(status_code=204)


async def get_code(request: Request) -> Response:
    sid, _ = authorize_session(request, ANY_ROLE)
    record, text = await session_view(ctx(request), sid)
    return _json(Code(code=text, language=record.language, updated_at=record.updated_at))


async def save_code(request: Request) -> Response:
    """Apply new text to the live Y.Text as a minimal edit (never a re-seed)."""
    sid, claims = authorize_session(request, WRITERS)
    c = ctx(request)
    body = await read_model(request, SaveCode)
    _check_code_size(c, body.code)
    record = await load_session(c, sid)
    if record.status == "ended":
        raise _ended()
    async with live_room(c, sid) as room:
        if room.read_only:
            raise _ended()
        current = ops.effective_session(record, ops.read_meta(room.ydoc))
        meta = {"language": body.language} if body.language and body.language != current.language else None
        try:
            text = await ops.submit_changes(room, code=body.code, meta=meta)
        except SessionGone:
            raise session_not_found() from None
        fields: dict[str, Any] = _touch(c)
        if meta:
            fields.update(meta)
        updated = await c.store.update_session(sid, **fields)
        if updated is None:
            raise session_not_found()
        events = [EventRecord(sid, "code_saved", {"by": claims.role, "length": len(body.code)})]
        if meta:
            events.append(EventRecord(sid, "language_changed", {"from": current.language, "to": body.language,
                                                                "by": claims.role}))
        await c.store.append_events(events)
        current = ops.effective_session(updated, ops.read_meta(room.ydoc))
    return _json(Code(code=text, language=current.language, updated_at=current.updated_at))


async def participants(request: Request) -> Response:
    sid, _ = authorize_session(request, ANY_ROLE)
    c = ctx(request)
    await load_session(c, sid)
    room = c.server.rooms.get(sid)
    entries = ops.participants(room) if room is not None else []
    return _json(Participants(participants=[Participant(**e) for e in entries]))


async def history(request: Request) -> Response:
    sid, _ = authorize_session(request, INTERVIEWER)
    c = ctx(request)
    after = _int_param(request, "after", 0, 0, MAX_AFTER)
    limit = _int_param(request, "limit", HISTORY_LIMIT, 1, HISTORY_MAX_LIMIT)
    await load_session(c, sid)
    events = await c.store.read_events(sid, after, limit + 1)
    more = len(events) > limit
    events = events[:limit]
    names = await _participant_names(c, sid, events)
    out = [HistoryEvent(seq=e.seq, ts=e.ts, type=e.type, data=_event_data(e, names)) for e in events]
    return _json(History(events=out, next_after=out[-1].seq if more and out else None))


# -- helpers ---------------------------------------------------------------------------------------

_PARTICIPANT_EVENTS = ("participant_joined", "participant_left")


def _event_data(e: EventRecord, names: dict[str, str]) -> dict[str, Any]:
    if e.type not in _PARTICIPANT_EVENTS:
        return e.data
    cid = e.data.get("connectionId")
    return {**e.data, "name": e.data.get("name") or names.get(cid)}  # type: ignore[arg-type]


async def _participant_names(c: AppContext, sid: str, page: list[EventRecord]) -> dict[str, str]:
    """Names for ``participant_joined`` events: a connection names itself (awareness) only after it joined,
    so the name comes from the live connection or from its later ``participant_left`` event."""
    wanted = {e.data.get("connectionId") for e in page if e.type == "participant_joined" and not e.data.get("name")}
    wanted.discard(None)
    if not wanted:
        return {}
    names = {k: v for k, v in ops.connection_names(c.server.rooms.get(sid)).items() if k in wanted}
    for e in page:
        if e.type == "participant_left" and e.data.get("name"):
            names.setdefault(e.data.get("connectionId"), e.data["name"])  # type: ignore[arg-type]
    after = page[-1].seq
    for _ in range(20):  # bounded look-ahead: 20 000 events
        if wanted <= names.keys():
            break
        later = await c.store.read_events(sid, after, 1000)
        for e in later:
            if e.type == "participant_left" and e.data.get("connectionId") in wanted and e.data.get("name"):
                names.setdefault(e.data["connectionId"], e.data["name"])
        if len(later) < 1000:
            break
        after = later[-1].seq
    return names


_DECIMAL = re.compile(r"[0-9]{1,19}")


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not _DECIMAL.fullmatch(raw) or not low <= int(raw) <= high:
        raise ApiError(422, "invalid_field", f"{name}: must be an integer from {low} to {high}")
    return int(raw)
