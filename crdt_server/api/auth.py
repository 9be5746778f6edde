"""Who is asking: one rule set for REST and WebSocket, two ways to say no.

``check_token``, ``check_access`` and ``check_current`` decide (the signature, the session and role,
then the service's check that the session exists and the token's generation is current); REST
answers their refusal with 401/403/404 (``authorize``) and the WebSocket handler with a close code.
Only the channel differs, never the rules.
"""

from __future__ import annotations

import hmac
import re

from starlette.requests import HTTPConnection, Request

from ..domain import ANY_ROLE, Role
from ..service import SessionService, TokenRevoked
from ..storage import SessionRecord
from ..tokens import Claims, InvalidToken, TokenSigner
from .context import ctx
from .errors import ApiError

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
SESSION_ID_PATTERN = SESSION_ID.pattern
MAX_TOKEN_LENGTH = 4096


class Refused(Exception):
    """A request or socket that may not proceed: ``unauthorized`` (no valid token) or ``forbidden``."""

    def __init__(self, kind: str, code: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message


def check_token(signer: TokenSigner, token: str | None) -> Claims:
    if not token:
        raise Refused("unauthorized", "unauthorized", "missing token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Refused("unauthorized", "invalid_token", "invalid token")
    try:
        return signer.verify(token)
    except InvalidToken as exc:
        raise Refused("unauthorized", "invalid_token", str(exc)) from None
    except Exception:  # noqa: BLE001 - whatever a hostile token makes the JWT library raise
        raise Refused("unauthorized", "invalid_token", "invalid token") from None


def check_access(claims: Claims, sid: str, roles: tuple[Role, ...]) -> Claims:
    if claims.session_id != sid:
        raise Refused("forbidden", "forbidden", "token is not valid for this session")
    if claims.role not in roles:
        raise Refused("forbidden", "forbidden", f"the {claims.role} role may not do this")
    return claims


async def check_current(service: SessionService, claims: Claims) -> SessionRecord:
    """The token's session exists (else ``SessionNotFound``) and its tokens were not re-issued since."""
    try:
        return await service.check_token(claims.session_id, claims.generation)
    except TokenRevoked:
        raise Refused("unauthorized", "invalid_token", "token revoked (the session's tokens were re-issued)") from None


def bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def session_not_found() -> ApiError:
    return ApiError(404, "session_not_found", "No session with this id (it may have expired or been deleted).")


async def authorize(request: Request, roles: tuple[Role, ...]) -> tuple[str, Claims]:
    """The path's session id and the caller's claims, checked in this order:

    401 missing/invalid token, 404 malformed session id, 403 token of another session, 404 no such
    session (deleted, expired), 401 revoked (re-issued) token, 403 a role that may not do this.
    """
    try:
        token = bearer(request)
        if token is None:
            raise Refused("unauthorized", "unauthorized", "Send 'Authorization: Bearer <session token>'.")
        claims = check_token(ctx(request).signer, token)
        sid: str = request.path_params["session_id"]
        if not SESSION_ID.match(sid):
            raise session_not_found()
        check_access(claims, sid, ANY_ROLE)  # its own session: is it still current?
        await check_current(ctx(request).service, claims)
        return sid, check_access(claims, sid, roles)
    except Refused as r:
        if r.kind == "unauthorized":
            message = r.message if r.code == "unauthorized" else f"The token is not valid: {r.message}."
            raise ApiError(401, r.code, message) from None
        raise ApiError(403, r.code, r.message[0].upper() + r.message[1:] + ".") from None


def require_api_key(request: Request) -> bool:
    """401 unless the caller holds the server's API key, when it has one. True for a holder: an
    operator's own integration, which the per-address rate limits do not apply to."""
    key = ctx(request).settings.api_key
    if not key:
        return False
    given = bearer(request)
    if given is None or not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "unauthorized", "This server requires 'Authorization: Bearer <api key>'.")
    return True
