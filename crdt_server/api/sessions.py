"""REST endpoints for sessions: create, read, change, delete, code, participants, history."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import sessions as ops
from ..storage import EventRecord, SessionRecord
from .auth import authorize, require_api_key, session_id
from .body import read_model
from .context import AppContext, client_ip, ctx
from .errors import ApiError
from .models import (
    Code,
    CreatedSession,
    CreateSession,
    History,
    HistoryEvent,
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


def _json(model: object, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", by_alias=True), status_code=status)  # type: ignore[attr-defined]


def _session_model(record: SessionRecord) -> Session:
    return Session(
        id=record.id, title=record.title, language=record.language, status=record.status,  # type: ignore[arg-type]
        created_at=record.created_at, updated_at=record.updated_at, expires_at=record.expires_at,
    )


async def load_session(c: AppContext, sid: str) -> SessionRecord:
    record = await c.store.get_session(sid)
    if record is None or record.expires_at <= time.time():
        raise ApiError(404, "session_not_found", "No session with this id (it may have expired or been deleted).")
    return record


def _check_code_size(c: AppContext, code: str) -> None:
    if len(code.encode("utf-8")) > c.settings.max_code_size:
        raise ApiError(422, "invalid_field", f"code: longer than {c.settings.max_code_size} bytes")


async def create_session(request: Request) -> Response:
    """Create a session; returns it with one token per role."""
    require_api_key(request)
    c = ctx(request)
    retry = c.create_limit.take(client_ip(request))
    if retry:
        raise ApiError(429, "rate_limited", "Too many sessions created from this address; retry later.",
                       {"Retry-After": str(max(1, round(retry)))})
    body = await read_model(request, CreateSession, allow_empty=True)
    _check_code_size(c, body.code)
    record = await ops.create_session(c.store, title=body.title, language=body.language, code=body.code, ttl=c.settings.session_ttl)
    created = CreatedSession(
        **_session_model(record).model_dump(),
        tokens=Tokens(**c.signer.issue_all(record.id)),
        ws_url=f"/ws/sessions/{record.id}",
    )
    return _json(created, 201)


async def get_session(request: Request) -> Response:
    sid = session_id(request)
    authorize(request, sid, ANY_ROLE)
    return _json(_session_model(await load_session(ctx(request), sid)))


async def patch_session(request: Request) -> Response:
    """Change title/language/status; the live document's ``meta`` map changes in the same step."""
    sid = session_id(request)
    claims = authorize(request, sid, INTERVIEWER)
    c = ctx(request)
    body = await read_model(request, UpdateSession)
    record = await load_session(c, sid)
    changes = body.model_dump(exclude_none=True)
    if record.status == "ended" and changes.get("status") != "active" and changes:
        raise ApiError(409, "session_ended", "The session has ended; only status 'active' reopens it.")
    changed = {k: v for k, v in changes.items() if getattr(record, k) != v}
    if changed:
        await ops.apply_changes(c.server, sid, meta=changed)
        old, now = record, time.time()
        record = await c.store.update_session(sid, **changed, updated_at=now, expires_at=now + c.settings.session_ttl) or record
        room = c.server.rooms.get(sid)
        if room is not None and "status" in changed:
            room.read_only = changed["status"] == "ended"
        await c.store.append_events(
            [EventRecord(sid, f"{k}_changed", {"from": getattr(old, k), "to": v, "by": claims.role}) for k, v in changed.items()]
        )
    return _json(_session_model(record))


async def delete_session(request: Request) -> Response:
    sid = session_id(request)
    authorize(request, sid, INTERVIEWER)
    c = ctx(request)
    await load_session(c, sid)
    await c.server.drop(sid)
    await c.store.delete_session(sid)
    return Response(status_code=204)


async def get_code(request: Request) -> Response:
    sid = session_id(request)
    authorize(request, sid, ANY_ROLE)
    c = ctx(request)
    record = await load_session(c, sid)
    text = await ops.current_text(c.server, c.store, sid)
    return _json(Code(code=text, language=record.language, updated_at=record.updated_at))


async def save_code(request: Request) -> Response:
    """Apply new text to the live Y.Text as a minimal edit (never a re-seed)."""
    sid = session_id(request)
    claims = authorize(request, sid, WRITERS)
    c = ctx(request)
    body = await read_model(request, SaveCode)
    _check_code_size(c, body.code)
    record = await load_session(c, sid)
    if record.status == "ended":
        raise ApiError(409, "session_ended", "The session has ended; its code is read-only.")
    meta = {"language": body.language} if body.language and body.language != record.language else None
    text = await ops.apply_changes(c.server, sid, code=body.code, meta=meta)
    now = time.time()
    fields = {"updated_at": now, "expires_at": now + c.settings.session_ttl}
    if meta:
        fields["language"] = body.language  # type: ignore[assignment]
    record = await c.store.update_session(sid, **fields) or record
    events = [EventRecord(sid, "code_saved", {"by": claims.role, "length": len(text)})]
    if meta:
        events.append(EventRecord(sid, "language_changed", {"to": body.language, "by": claims.role}))
    await c.store.append_events(events)
    return _json(Code(code=text, language=record.language, updated_at=record.updated_at))


async def participants(request: Request) -> Response:
    sid = session_id(request)
    authorize(request, sid, ANY_ROLE)
    c = ctx(request)
    await load_session(c, sid)
    room = c.server.rooms.get(sid)
    entries = room.participants() if room is not None else []
    return _json(Participants(participants=[Participant(**e) for e in entries]))


async def history(request: Request) -> Response:
    sid = session_id(request)
    authorize(request, sid, INTERVIEWER)
    c = ctx(request)
    await load_session(c, sid)
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    events = await c.store.read_events(sid, after, limit)
    out = [HistoryEvent(seq=e.seq, ts=e.ts, type=e.type, data=e.data) for e in events]
    return _json(History(events=out, next_after=out[-1].seq if len(out) == limit else None))


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(422, "invalid_field", f"{name}: must be an integer from {low} to {high}")
    return int(raw)
