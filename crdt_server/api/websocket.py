"""The WebSocket endpoint: authenticate, then hand the connection to its session's room.

Refusals accept first and then close with a 44xx code and a reason (gap 9: closing before
accept looks like a network error to y-websocket, which then retries forever); no document
data is sent before the token has been checked.
"""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack

import anyio
from starlette.websockets import WebSocket

from ..storage import EventRecord
from ..sync import Connection, SessionNotFound
from ..tokens import InvalidToken
from .auth import SESSION_ID
from .context import client_ip, ctx
from .origins import origin_allowed

log = logging.getLogger(__name__)


async def refuse(websocket: WebSocket, code: int, reason: str) -> None:
    await websocket.accept()
    await websocket.close(code=code, reason=reason)


async def session_socket(websocket: WebSocket) -> None:
    c = ctx(websocket)
    sid = websocket.path_params["session_id"]
    if not origin_allowed(websocket, c.settings):
        return await refuse(websocket, 4403, "origin not allowed")
    retry = c.connect_limit.take(client_ip(websocket))
    if retry:
        return await refuse(websocket, 4429, f"too many connection attempts; retry in {max(1, round(retry))} s")
    token = websocket.query_params.get("token")
    if not token:
        return await refuse(websocket, 4401, "missing token")
    try:
        claims = c.signer.verify(token)
    except InvalidToken as exc:
        return await refuse(websocket, 4401, str(exc))
    if not SESSION_ID.match(sid) or claims.session_id != sid:
        return await refuse(websocket, 4403, "token is not valid for this session")
    record = await c.store.get_session(sid)
    if record is None or record.expires_at <= time.time():
        return await refuse(websocket, 4404, "session not found")
    async with AsyncExitStack() as stack:
        try:  # loaded before accepting (a broken session is refused cleanly), and held loaded
            # until this handler ends, however it ends: the idle unload is scheduled then
            await stack.enter_async_context(c.server.room(sid))
        except SessionNotFound:
            return await refuse(websocket, 4404, "session not found")
        await _serve(c, websocket, sid, claims.role)


async def _serve(c, websocket: WebSocket, sid: str, role: str) -> None:  # type: ignore[no-untyped-def]
    await websocket.accept()
    s = c.settings
    conn = Connection(websocket, session_id=sid, role=role,
                      max_messages=s.send_queue_messages, max_bytes=s.send_queue_bytes)
    await _event(c, sid, "participant_joined", {"role": conn.role, "connectionId": conn.id})
    try:
        async with anyio.create_task_group() as tg:

            async def sender() -> None:
                await conn.run_sender()
                tg.cancel_scope.cancel()  # closed or broken: stop reading too

            tg.start_soon(sender)
            try:
                await c.server.serve(conn)
            finally:
                if not conn.closed.is_set():
                    conn.close(1000, "")
                # let the sender send a pending close frame, but never wait long for a dead peer
                tg.cancel_scope.deadline = anyio.current_time() + 2
    finally:
        with anyio.CancelScope(shield=True):
            await _event(c, sid, "participant_left", {"role": conn.role, "connectionId": conn.id, "name": conn.name})


async def _event(c, sid: str, kind: str, data: dict) -> None:  # type: ignore[no-untyped-def]
    try:
        await c.store.append_events([EventRecord(sid, kind, data)])
    except Exception as exc:  # the session may just have been deleted
        log.debug("event %s for %s not stored: %r", kind, sid, exc)
