"""REST endpoints for sessions: create, read, change, delete, code, participants, history.

Each handler authorises, parses the body and shapes the answer; what the operation does is the
session service's (``crdt_server/service.py``). Service errors (no such session, ended session)
become HTTP answers in ``api/errors.py``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..domain import ANY_ROLE, INTERVIEWER, WRITERS
from ..lifetimes import InvalidExpiry
from ..limits import retry_after_header
from ..storage import SessionRecord
from ..web import session_links
from .auth import authorize, require_api_key
from .body import query_int, read_model
from .context import AppContext, client_ip, ctx
from .errors import ApiError, model_response
from .models import (
    Code,
    CreatedSession,
    CreateSession,
    History,
    HistoryEvent,
    Links,
    Notes,
    Participant,
    Participants,
    SaveCode,
    Session,
    SessionList,
    SessionSummary,
    Tokens,
    TokenSet,
    UpdateSession,
)

MAX_AFTER = 2**62
HISTORY_LIMIT = 100
HISTORY_MAX_LIMIT = 1000


def _session_model(record: SessionRecord) -> Session:
    return Session(
        id=record.id, title=record.title, language=record.language, status=record.status,  # type: ignore[arg-type]
        created_at=record.created_at, updated_at=record.updated_at, expires_at=record.expires_at,
        locked=record.locked, run_enabled=record.run_enabled,
    )


async def list_sessions(request: Request) -> Response:
    """Every session, for the server's operator: needs the API key (403 when the server has none)."""
    if not require_api_key(request):
        raise ApiError(403, "forbidden", "Listing sessions needs the server's API key (CRDT_SERVER_API_KEY), "
                                         "and this server has none.")
    after = query_int(request, "after", 0, 0, MAX_AFTER)
    limit = query_int(request, "limit", HISTORY_LIMIT, 1, HISTORY_MAX_LIMIT)
    page, more = await ctx(request).service.list_sessions(after, limit)
    out = [SessionSummary(**_session_model(record).model_dump(), participants=count) for _, record, count in page]
    return model_response(SessionList(sessions=out, next_after=page[-1][0] if more and page else None))


def _check_code_size(c: AppContext, code: str) -> None:
    if len(code.encode("utf-8")) > c.settings.max_code_size:
        raise ApiError(422, "invalid_field", f"code: longer than {c.settings.max_code_size} bytes")


async def create_session(request: Request) -> Response:
    """Create a session; returns it with one token per role."""
    trusted = require_api_key(request)
    c = ctx(request)
    retry = 0.0 if trusted else c.create_limit.take(client_ip(request))
    if retry:
        raise ApiError(429, "rate_limited", "Too many sessions created from this address; retry later.",
                       {"Retry-After": retry_after_header(retry)})
    body = await read_model(request, CreateSession, allow_empty=True)
    _check_code_size(c, body.code)
    try:
        record = await c.service.create(title=body.title, language=body.language, code=body.code,
                                        expires_at=body.expires_at)
    except InvalidExpiry as exc:
        raise ApiError(422, "invalid_field", f"expiresAt: {exc}") from None
    tokens = c.signer.issue_all(record.id)
    created = CreatedSession(
        **_session_model(record).model_dump(),
        tokens=Tokens(**tokens),
        links=Links(**session_links(request, record.id, tokens)),
        ws_url=f"/ws/sessions/{record.id}",
    )
    return model_response(created, 201, {"Location": f"/api/sessions/{record.id}"})


async def get_session(request: Request) -> Response:
    sid, _ = await authorize(request, ANY_ROLE)
    return model_response(_session_model(await ctx(request).service.get(sid)))


async def patch_session(request: Request) -> Response:
    """Change title/language/status; the live document's ``meta`` map changes in the same step."""
    sid, claims = await authorize(request, INTERVIEWER)
    c = ctx(request)
    body = await read_model(request, UpdateSession, allow_empty=True)
    record = await c.service.patch(sid, body.model_dump(exclude_none=True), claims.role)
    return model_response(_session_model(record))


async def delete_session(request: Request) -> Response:
    sid, _ = await authorize(request, INTERVIEWER)
    await ctx(request).service.delete(sid)
    return Response(status_code=204)


async def reissue_tokens(request: Request) -> Response:
    """New tokens for every role; the old ones are revoked and their sockets closed (4401)."""
    sid, claims = await authorize(request, INTERVIEWER)
    c = ctx(request)
    generation = await c.service.reissue_tokens(sid, claims.role)
    tokens = c.signer.issue_all(sid, generation)
    return model_response(TokenSet(tokens=Tokens(**tokens), links=Links(**session_links(request, sid, tokens))))


async def get_code(request: Request) -> Response:
    sid, _ = await authorize(request, ANY_ROLE)
    view = await ctx(request).service.view(sid)
    return model_response(Code(code=view.code, language=view.record.language, updated_at=view.record.updated_at))


async def save_code(request: Request) -> Response:
    """Apply new text to the live Y.Text as a minimal edit (never a re-seed)."""
    sid, claims = await authorize(request, WRITERS)
    c = ctx(request)
    body = await read_model(request, SaveCode)
    _check_code_size(c, body.code)
    view = await c.service.save_code(sid, body.code, body.language, claims.role)
    return model_response(Code(code=view.code, language=view.record.language, updated_at=view.record.updated_at))


async def participants(request: Request) -> Response:
    sid, _ = await authorize(request, ANY_ROLE)
    entries = await ctx(request).service.participants(sid)
    return model_response(Participants(participants=[Participant(**e) for e in entries]))


async def history(request: Request) -> Response:
    sid, _ = await authorize(request, INTERVIEWER)
    after = query_int(request, "after", 0, 0, MAX_AFTER)
    limit = query_int(request, "limit", HISTORY_LIMIT, 1, HISTORY_MAX_LIMIT)
    events, more = await ctx(request).service.history(sid, after, limit)
    out = [HistoryEvent(seq=e.seq, ts=e.ts, type=e.type, data=e.data) for e in events]  # type: ignore[arg-type]
    return model_response(History(events=out, next_after=out[-1].seq if more and out else None))


async def get_notes(request: Request) -> Response:
    sid, _ = await authorize(request, INTERVIEWER)
    return model_response(Notes(notes=await ctx(request).service.notes(sid)))
