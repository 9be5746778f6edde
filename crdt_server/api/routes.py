"""The REST route table: every endpoint once, with its handler, roles, models and errors.

The Starlette routes (``routes``) and the OpenAPI document (``api/openapi.py``) are both generated
from ``operations()``, so the served API and its documentation cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, WebSocketRoute

from ..domain import ANY_ROLE, INTERVIEWER, WRITERS, EventType
from ..playback import STREAM_MAX_ROWS, STREAM_MEDIA_TYPE
from . import execute, meta, playback, sessions, timeline
from .models import (
    Code,
    CreatedSession,
    CreateSession,
    ExecuteRequest,
    ExecutionResult,
    Health,
    History,
    Languages,
    Notes,
    Participants,
    Playback,
    SaveCode,
    Session,
    SessionExecuteRequest,
    SessionList,
    Timeline,
    TokenSet,
    UpdateSession,
)
from .operation import RETRY_AFTER, Operation, QueryParam, catch_all, routes_from
from .websocket import notes_socket, session_socket, unknown_socket


def operations() -> list[Operation]:
    """The REST route table: handlers, roles, models and errors; routes and OpenAPI come from it."""
    session_ops = [
        Operation(
            "POST", "/api/sessions", sessions.create_session, "createSession", "Create a session",
            description="Returns the session with one signed token per role and the WebSocket path. "
                        "Needs `Authorization: Bearer <api key>` when the server has an API key.",
            security="api_key", request=CreateSession, request_required=False,
            responses={201: ("Created.", CreatedSession)}, errors=(429,),
            response_headers={
                201: {"Location": {"description": "The new session's URL path.", "schema": {"type": "string"}}},
                429: RETRY_AFTER,
            },
        ),
        Operation(
            "GET", "/api/sessions", sessions.list_sessions, "listSessions", "List sessions",
            description="Every session on this server, in creation order, for its operator: needs "
                        "`Authorization: Bearer <api key>`; a server without an API key answers 403. "
                        "`participants` counts the live connections to this process. Paginated: pass "
                        "`nextAfter` as `?after=` until it is null.",
            security="api_key", responses={200: ("One page of sessions.", SessionList)}, errors=(403,),
            query=(
                QueryParam("after", {"type": "integer", "minimum": 0, "maximum": sessions.MAX_AFTER, "default": 0},
                           "Return sessions after this cursor."),
                QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": sessions.HISTORY_MAX_LIMIT,
                                     "default": sessions.HISTORY_LIMIT}, "Page size."),
            ),
        ),
        Operation(
            "GET", "/api/sessions/{session_id}", sessions.get_session, "getSession", "Read a session",
            security="session", roles=ANY_ROLE, responses={200: ("The session.", Session)},
        ),
        Operation(
            "PATCH", "/api/sessions/{session_id}", sessions.patch_session, "updateSession", "Change a session",
            description="Title, language, status, `locked` and `runEnabled` change in the live document's `meta` "
                        "map in the same step, so connected editors see them at once. `status: ended` makes the "
                        "session read-only for everyone (sockets stay connected; an editor's edit is reverted for "
                        "everyone, its author included; REST writes answer 409); on an ended session only a "
                        "change that includes `status: active` is accepted. `locked: true` does the same for the "
                        "candidate only (REST saves answer 409 `session_locked`); after a reopen or an unlock "
                        "editors edit again at once, without reconnecting. `runEnabled: false` makes the "
                        "candidate's session runs answer 403 `run_disabled`.",
            security="session", roles=INTERVIEWER, request=UpdateSession, request_required=False,
            responses={200: ("The session after the change.", Session)}, errors=(409,),
        ),
        Operation(
            "DELETE", "/api/sessions/{session_id}", sessions.delete_session, "deleteSession", "Delete a session",
            description="Removes the document, its update log and its history, and closes every connected socket "
                        "with code 4404. Later requests answer 404.",
            security="session", roles=INTERVIEWER, responses={204: ("Deleted.", None)},
        ),
        Operation(
            "POST", "/api/sessions/{session_id}/tokens", sessions.reissue_tokens, "reissueTokens", "Re-issue tokens",
            description="Returns a new token for every role and revokes every earlier one: REST answers them 401 and "
                        "their WebSocket connections are closed with 4401 (y-websocket stops reconnecting). Works on "
                        "ended sessions too. Recorded in the history as `tokens_reissued`.",
            security="session", roles=INTERVIEWER, responses={200: ("The new tokens.", TokenSet)},
        ),
        Operation(
            "GET", "/api/sessions/{session_id}/code", sessions.get_code, "getCode", "Read the code",
            description="The live document's text, as connected editors have it.",
            security="session", roles=ANY_ROLE, responses={200: ("The code.", Code)},
        ),
        Operation(
            "POST", "/api/sessions/{session_id}/code", sessions.save_code, "saveCode", "Save code",
            description="Applied to the live document as a minimal edit (common prefix and suffix kept), so "
                        "connected editors keep their cursors and nothing is duplicated. Answers the resulting "
                        "text, which includes edits that editors made concurrently.",
            security="session", roles=WRITERS, request=SaveCode,
            responses={200: ("The code after the change.", Code)}, errors=(409,),
        ),
        Operation(
            "GET", "/api/sessions/{session_id}/participants", sessions.participants, "listParticipants",
            "List participants",
            description="One entry per live WebSocket connection, with name, color and cursor from its awareness "
                        "state where present. The server itself is never listed.",
            security="session", roles=ANY_ROLE, responses={200: ("Who is connected now.", Participants)},
        ),
        Operation(
            "GET", "/api/sessions/{session_id}/history", sessions.history, "getHistory", "Read the history",
            description="Timestamped events, oldest first: " + ", ".join(f"`{e}`" for e in EventType)
                        + ". Paginated: pass `nextAfter` as `?after=` until it is null.",
            security="session", roles=INTERVIEWER, responses={200: ("One page of events.", History)},
            query=(
                QueryParam("after", {"type": "integer", "minimum": 0, "maximum": sessions.MAX_AFTER, "default": 0},
                           "Return events with `seq` greater than this."),
                QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": sessions.HISTORY_MAX_LIMIT,
                                     "default": sessions.HISTORY_LIMIT}, "Page size."),
            ),
        ),
        Operation(
            "GET", "/api/sessions/{session_id}/notes", sessions.get_notes, "getNotes", "Read the private notes",
            description="The interviewer's private notes: a second Yjs document (Y.Text `notes`), edited over "
                        "`WS /ws/sessions/{id}/notes`, never part of the shared document or its history.",
            security="session", roles=INTERVIEWER, responses={200: ("The notes.", Notes)},
        ),
        Operation(
            "GET", "/api/sessions/{session_id}/playback", playback.playback, "getPlayback", "Play back a moment",
            description="The document as it was after every update stored at or before `at` (unix seconds), or "
                        "up to update-log row `seq`: give exactly one. Before the first edit it is the starter "
                        "code; `at` past the end is the current text; `seq` past the end is 422. See docs/playback.md.",
            security="session", roles=INTERVIEWER, responses={200: ("The document at that moment.", Playback)},
            query=(
                QueryParam("at", {"type": "number", "minimum": 0, "maximum": playback.MAX_AT},
                           "Unix seconds (decimal, no exponent)."),
                QueryParam("seq", {"type": "integer", "minimum": 1, "maximum": playback.MAX_SEQ},
                           "An update-log row."),
            ),
        ),
        Operation(
            "GET", "/api/sessions/{session_id}/playback/updates", playback.playback_updates, "getPlaybackUpdates",
            "Stream stored updates",
            description="The stored Yjs updates `from_seq`..`to_seq` (inclusive, both optional) as length-prefixed "
                        "binary records (seq, server time, role, connection id, name, update), at most "
                        f"{STREAM_MAX_ROWS} per response; `X-Next-From-Seq` names where to continue while more "
                        "remain. The encoding is in docs/playback.md.",
            security="session", roles=INTERVIEWER, responses={200: ("The records.", None)},
            raw_response={"type": "string", "format": "binary"}, raw_media_type=STREAM_MEDIA_TYPE,
            response_headers={200: {"X-Next-From-Seq": {
                "description": "Present while more rows remain: pass it as `from_seq`.", "schema": {"type": "integer"}}}},
            query=(
                QueryParam("from_seq", {"type": "integer", "minimum": 1, "maximum": playback.MAX_SEQ, "default": 1},
                           "First row (inclusive)."),
                QueryParam("to_seq", {"type": "integer", "minimum": 1, "maximum": playback.MAX_SEQ},
                           "Last row (inclusive); default: the end."),
            ),
        ),
        Operation(
            "GET", "/api/sessions/{session_id}/timeline", timeline.get_timeline, "getTimeline", "Read the timeline",
            description="Who typed what and when, replayed from the update log: per participant (one per role and "
                        "display name, reconnects merged) the code points inserted and deleted, with points per "
                        "time bucket to draw as tracks; and the joins, leaves, language changes, runs, saves, lock "
                        "changes and pastes (one update inserting more than `--paste-threshold` code points). "
                        "A reconnect's resent content is never counted twice. Edits by the server (REST saves) "
                        "belong to no participant.",
            security="session", roles=INTERVIEWER, responses={200: ("The timeline.", Timeline)},
            query=(
                QueryParam("bucket", {"type": "integer", "minimum": 1, "maximum": timeline.MAX_BUCKET,
                                      "default": timeline.BUCKET}, "Seconds per point."),
            ),
        ),
    ]
    run_ops = [
        Operation(
            "GET", "/api/languages", execute.languages, "listLanguages", "List session languages", tag="execution",
            description="Every language a session may have (the registry, with aliases) and which of them this "
            "host can run (`runnable`, with versions), and the sandbox mode. With Run off: the registry, none runnable.",
            responses={200: ("The language registry.", Languages)}, errors=(),
        ),
        Operation(
            "POST", "/api/execute", execute.execute, "execute", "Run code", tag="execution",
            description="Runs the code in the sandbox (timeout default 5 s, at most the server's maximum). "
                        "Needs `Authorization: Bearer <api key>` when the server has an API key.",
            security="api_key", request=ExecuteRequest,
            responses={200: ("The result (also for programs that fail or time out).", ExecutionResult)},
            errors=(429, 503), response_headers={429: RETRY_AFTER},
        ),
        Operation(
            "POST", "/api/sessions/{session_id}/execute", execute.session_execute, "executeSession",
            "Run the session's code", tag="execution",
            description="Runs a snapshot of the live text in the session's language. The result is appended to "
                        "the document's `runs` array (newest last, at most 20), so every editor sees it, and to "
                        "the history (`run_started`, `run_finished` with the snapshot's SHA-256). One run per "
                        "session at a time; runs are rate-limited per session.",
            security="session", roles=WRITERS, request=SessionExecuteRequest, request_required=False,
            responses={200: ("The result.", ExecutionResult)}, errors=(409, 429, 503),
            response_headers={429: RETRY_AFTER},
        ),
    ]
    meta_ops = [
        Operation(
            "GET", "/health", meta.health, "health", "Health check", tag="meta",
            description="503 with `status: degraded` when the database does not answer.",
            responses={200: ("Healthy.", Health), 503: ("The database does not answer.", Health)},
            strict_query=False,
        ),
        Operation(
            "GET", "/metrics", meta.metrics, "metrics", "Prometheus metrics", tag="meta",
            description="The Prometheus text exposition format (`text/plain; version=0.0.4`), not JSON; the "
                        "metrics are listed in the README (Monitoring). Needs `Authorization: Bearer <metrics "
                        "token>` when the server has one (`--metrics-token`).",
            responses={200: ("The metrics.", None)}, raw_response={"type": "string"},
            raw_media_type="text/plain; version=0.0.4", errors=(401,), strict_query=False,
        ),
        Operation(
            "GET", "/openapi.json", meta.openapi_json, "openapi", "This OpenAPI document", tag="meta",
            description="The same document as `docs/openapi.yaml` in the repository.",
            responses={200: ("The OpenAPI 3.1 document.", None)}, raw_response={"type": "object"},
            strict_query=False,
        ),
    ]
    return [*session_ops, *run_ops, *meta_ops]


def routes(pages: Sequence[BaseRoute] = ()) -> list[BaseRoute]:
    """The REST routes, the WebSocket endpoint, ``pages`` (the interview page), then a JSON 404."""
    return [
        *routes_from(operations()),
        WebSocketRoute("/ws/sessions/{session_id}", session_socket),
        WebSocketRoute("/ws/sessions/{session_id}/notes", notes_socket),  # interviewer only
        WebSocketRoute("/{path:path}", unknown_socket),  # 4404, never a retry loop
        *pages,
        catch_all(),  # JSON 404 for every other path (and no slash redirects)
    ]
