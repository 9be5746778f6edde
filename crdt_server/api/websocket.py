"""The WebSocket endpoint: admit, then hand the connection to its session's room.

Final refusals accept first and then close with a 44xx code and a reason: closing before accept
looks like a network error to y-websocket, which then retries forever (docs/design/pycrdt-websocket.md,
"Refusing before accept"). A refusal the client should retry (the connect rate limit) is exactly
that: an HTTP 429 answer to the handshake, which y-websocket retries with back-off. No document data is sent before the token has been checked. The rules
are the REST ones (``api/auth.py``); only the channel of the answer differs.
"""

from __future__ import annotations

import re
import time

import anyio
from starlette.websockets import WebSocket

from ..domain import ANY_ROLE, INTERVIEWER, Role
from ..limits import retry_after_header
from ..logs import log_socket_closed, log_socket_opened
from ..service import SessionService
from ..storage import SessionNotFound
from ..sync import CloseCode, Connection, SessionRoom
from ..sync.server import notes_room
from ..tokens import Claims
from .auth import SESSION_ID, Refused, check_access, check_current, check_token
from .context import client_ip, ctx
from .errors import error_response
from .origins import origin_allowed

# RFC 6455 4.1: a subprotocol is an RFC 7230 token
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def offered_subprotocol(websocket: WebSocket) -> str | None:
    """The subprotocol to answer: the first one the client offers, as the reference server does (Node
    ``ws`` without ``handleProtocols``). Browsers and ``ws`` fail a handshake that offered subprotocols
    (y-websocket's ``protocols`` option) and got none back. The server speaks one protocol whatever
    the name; a name that is not a token is not echoed (no conforming client sends one)."""
    offered = websocket.scope.get("subprotocols") or []
    first = offered[0] if offered else ""
    return first if _TOKEN.fullmatch(first) else None


async def accept(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol=offered_subprotocol(websocket))
    # The handshake's headers were read for the checks above; an open socket does not keep them, nor
    # Starlette's parsed headers and query, for its life: about 1.2 KB per socket.
    websocket.scope["headers"] = []
    for parsed in ("_headers", "_query_params"):
        websocket.__dict__.pop(parsed, None)


async def refuse(websocket: WebSocket, code: int, reason: str) -> None:
    """Accepted (with the subprotocol the client asked for: else its handshake fails and it retries as
    after a network error), then closed with ``code``."""
    await accept(websocket)
    await websocket.close(code=code, reason=reason)


def _close_for(exc: Refused | SessionNotFound) -> tuple[int, str]:
    if isinstance(exc, SessionNotFound):
        return CloseCode.SESSION_NOT_FOUND, "session not found"
    return (CloseCode.UNAUTHORIZED if exc.kind == "unauthorized" else CloseCode.FORBIDDEN), exc.message


async def _admit(websocket: WebSocket, roles: tuple[Role, ...]) -> Claims | None:
    """Origin, connect rate, token, role and session: the claims, or None once refused.

    A role the endpoint does not admit is refused here, before any room is loaded, so it gets no data."""
    c = ctx(websocket)
    sid: str = websocket.path_params["session_id"]
    if not origin_allowed(websocket, c.settings):
        await refuse(websocket, CloseCode.FORBIDDEN, "origin not allowed")
        return None
    retry = c.connect_limit.take(client_ip(websocket))
    if retry:  # HTTP 429 on the handshake, not a close: y-websocket retries a failed handshake
        await websocket.send_denial_response(error_response(
            429, "rate_limited", "too many connection attempts from this address",
            headers={"Retry-After": retry_after_header(retry)}))
        return None
    try:
        claims = check_token(c.signer, websocket.query_params.get("token"))
        if not SESSION_ID.match(sid):
            raise Refused("forbidden", "forbidden", "token is not valid for this session")
        check_access(claims, sid, roles)
        await check_current(c.service, claims)
    except (Refused, SessionNotFound) as exc:
        await refuse(websocket, *_close_for(exc))
        return None
    return claims


async def session_socket(websocket: WebSocket) -> None:
    """The shared document, for every role."""
    await _socket(websocket, ANY_ROLE, websocket.path_params["session_id"], announce=True)


async def notes_socket(websocket: WebSocket) -> None:
    """The interviewer's private notes: a second document; other roles are refused with 4403."""
    await _socket(websocket, INTERVIEWER, notes_room(websocket.path_params["session_id"]), announce=False)


async def _socket(websocket: WebSocket, roles: tuple[Role, ...], room_name: str, *, announce: bool) -> None:
    c = ctx(websocket)
    claims = await _admit(websocket, roles)
    if claims is None:
        return
    sid = claims.session_id
    try:  # loaded before accepting (a broken session is refused cleanly), and held loaded until this
        # handler ends, however it ends: the idle unload is scheduled then
        room = await c.service.rooms.hold(room_name)
    except SessionNotFound as exc:
        return await refuse(websocket, *_close_for(exc))
    try:
        await accept(websocket)
        conn = Connection(websocket, session_id=sid, role=claims.role,
                          max_messages=c.settings.send_queue_messages, max_bytes=c.settings.send_queue_bytes,
                          ignored_rate=c.settings.ignored_bytes_rate)
        with c.service.tracking(conn, claims.generation):
            try:  # once more, now that a re-issue finds this socket: one may have run since the check
                await check_current(c.service, claims)
            except (Refused, SessionNotFound) as exc:
                if conn.close_code is None:
                    code, reason = _close_for(exc)
                    return await websocket.close(code=code, reason=reason)  # before any document data
                # the re-issue or deletion that made the check fail closed the socket meanwhile (its
                # close frame is on its way): a second close would raise
                with anyio.move_on_after(2):
                    await conn.wait_closed()
                conn.abort()
                return
            await _serve(c.service, conn, room, announce)
    finally:
        c.service.rooms.release(room_name, room)


async def _serve(service: SessionService, conn: Connection, room: SessionRoom, announce: bool) -> None:
    """``announce``: joins and leaves go to the history (the shared document's sockets, not the notes')."""
    if announce:
        await service.joined(conn)
    log_socket_opened(conn.session_id, conn.role, conn.id)
    try:
        with anyio.CancelScope() as reading:  # cancelled once the socket is closed or broken
            conn.stop_reading = reading.cancel  # a no-op once this block is left
            await room.serve(conn)
        if not conn.is_closed:
            conn.close(CloseCode.NORMAL, "")  # a no-op if a close was asked for already
            # let the sender send a pending close frame, but never wait long for a dead peer
            with anyio.move_on_after(2):
                await conn.wait_closed()
    finally:
        conn.abort()
        log_socket_closed(conn.session_id, conn.role, conn.id, time.time() - conn.connected_at, conn.close_code)
        if announce:
            with anyio.CancelScope(shield=True):
                await service.left(conn)


async def unknown_socket(websocket: WebSocket) -> None:
    """Any other WebSocket path (a typo, the session id twice): a close y-websocket does not retry,
    where closing before accept would look like a network error it retries forever."""
    await refuse(websocket, CloseCode.SESSION_NOT_FOUND, "no such WebSocket endpoint")
