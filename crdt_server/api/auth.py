"""Who is asking: bearer tokens for REST, role checks, the optional API key."""

from __future__ import annotations

import hmac
import re

from starlette.requests import Request

from ..tokens import Claims, InvalidToken
from .context import ctx
from .errors import ApiError

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
SESSION_ID_PATTERN = SESSION_ID.pattern
MAX_TOKEN_LENGTH = 4096


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def session_not_found() -> ApiError:
    return ApiError(404, "session_not_found", "No session with this id (it may have expired or been deleted).")


def session_id(request: Request) -> str:
    sid = request.path_params["session_id"]
    if not SESSION_ID.match(sid):
        raise session_not_found()
    return sid  # type: ignore[no-any-return]


def _verify(request: Request) -> Claims:
    token = bearer(request)
    if token is None:
        raise ApiError(401, "unauthorized", "Send 'Authorization: Bearer <session token>'.")
    if len(token) > MAX_TOKEN_LENGTH:
        raise ApiError(401, "invalid_token", "The token is not valid: invalid token.")
    try:
        return ctx(request).signer.verify(token)
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", f"The token is not valid: {exc}.") from None
    except Exception:  # whatever a hostile token makes the JWT library raise
        raise ApiError(401, "invalid_token", "The token is not valid: invalid token.") from None


def _check(claims: Claims, sid: str, roles: tuple[str, ...]) -> Claims:
    if claims.session_id != sid:
        raise ApiError(403, "forbidden", "This token belongs to another session.")
    if claims.role not in roles:
        raise ApiError(403, "forbidden", f"The {claims.role} role may not do this.")
    return claims


def authorize_session(request: Request, roles: tuple[str, ...]) -> tuple[str, Claims]:
    """The path's session id and the caller's claims, checked in this order:

    401 missing/invalid token, 404 malformed session id, 403 token of another session or a role
    that may not do this. Whether the session still exists is the caller's check (404).
    """
    claims = _verify(request)
    sid = session_id(request)
    return sid, _check(claims, sid, roles)


def require_api_key(request: Request) -> None:
    key = ctx(request).settings.api_key
    if not key:
        return
    given = bearer(request)
    if given is None or not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "unauthorized", "This server requires 'Authorization: Bearer <api key>'.")
