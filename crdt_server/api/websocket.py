"""The WebSocket endpoint: admit, then hand the connection to its session's room.

Final refusals accept first and then close with a 44xx code and a reason: closing before accept
looks like a network error to y-websocket, which then retries forever (docs/design/pycrdt-websocket.md,
"Refusing before accept"). A refusal the client should retry (the connect rate limit) is exactly
that: an HTTP 429 answer to the handshake, which y-websocket retries with back-off. No document data is sent before the token has been checked. The rules
are the REST ones (``api/auth.py``); only the channel of the answer differs.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import anyio
from starlette.websockets import WebSocket

from ..domain import ANY_ROLE
from ..limits import retry_after_header
from ..logs import log_socket_closed, log_socket_opened
from ..service import SessionService
from ..storage import SessionNotFound
from ..sync import CloseCode, Connection, SessionRoom
from .auth import SESSION_ID, Refused, check_access, check_current, check_token
from .context import client_ip, ctx
from .errors import error_response
from .origins import origin_allowed


async def refuse(websocket: WebSocket, code: int, reason: str) -> None:
    await websocket.accept()
    await websocket.close(code=code, reason=reason)


def _close_for(exc: Refused | SessionNotFound) -> tuple[int, str]:
    if isinstance(exc, SessionNotFound):
        return CloseCode.SESSION_NOT_FOUND, "session not found"
    return (CloseCode.UNAUTHORIZED if exc.kind == "unauthorized" else CloseCode.FORBIDDEN), exc.message


async def session_socket(websocket: WebSocket) -> None:
    c = ctx(websocket)
    sid: str = websocket.path_params["session_id"]
    if not origin_allowed(websocket, c.settings):
        return await refuse(websocket, CloseCode.FORBIDDEN, "origin not allowed")
    retry = c.connect_limit.take(client_ip(websocket))
    if retry:  # HTTP 429 on the handshake, not a close: y-websocket retries a failed handshake
        return await websocket.send_denial_response(error_response(
            429, "rate_limited", "too many connection attempts from this address",
            headers={"Retry-After": retry_after_header(retry)}))
    try:
        claims = check_token(c.signer, websocket.query_params.get("token"))
        if not SESSION_ID.match(sid):
            raise Refused("forbidden", "forbidden", "token is not valid for this session")
        check_access(claims, sid, ANY_ROLE)
        await check_current(c.service, claims)
    except (Refused, SessionNotFound) as exc:
        return await refuse(websocket, *_close_for(exc))
    async with AsyncExitStack() as stack:
        try:  # loaded before accepting (a broken session is refused cleanly), and held loaded
            # until this handler ends, however it ends: the idle unload is scheduled then
            room = await stack.enter_async_context(c.service.rooms.room(sid))
        except SessionNotFound as exc:
            return await refuse(websocket, *_close_for(exc))
        await websocket.accept()
        conn = Connection(websocket, session_id=sid, role=claims.role,
                          max_messages=c.settings.send_queue_messages, max_bytes=c.settings.send_queue_bytes)
        with c.service.tracking(conn, claims.generation):
            try:  # once more, now that a re-issue finds this socket: one may have run since the check
                await check_current(c.service, claims)
            except (Refused, SessionNotFound) as exc:
                code, reason = _close_for(exc)
                return await websocket.close(code=code, reason=reason)  # before any document data
            await _serve(c.service, conn, room)


async def _serve(service: SessionService, conn: Connection, room: SessionRoom) -> None:
    await service.joined(conn)
    log_socket_opened(conn.session_id, conn.role, conn.id)
    try:
        async with anyio.create_task_group() as tg:

            async def sender() -> None:
                await conn.run_sender()
                tg.cancel_scope.cancel()  # closed or broken: stop reading too

            tg.start_soon(sender)
            try:
                await room.serve(conn)
            finally:
                if not conn.closed.is_set():
                    conn.close(CloseCode.NORMAL, "")
                # let the sender send a pending close frame, but never wait long for a dead peer
                tg.cancel_scope.deadline = anyio.current_time() + 2
    finally:
        log_socket_closed(conn.session_id, conn.role, conn.id, time.time() - conn.connected_at, conn.close_code)
        with anyio.CancelScope(shield=True):
            await service.left(conn)


async def unknown_socket(websocket: WebSocket) -> None:
    """Any other WebSocket path (a typo, the session id twice): a close y-websocket does not retry,
    where closing before accept would look like a network error it retries forever."""
    await refuse(websocket, CloseCode.SESSION_NOT_FOUND, "no such WebSocket endpoint")
