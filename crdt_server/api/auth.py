"""Who is asking: bearer tokens for REST, role checks, the optional API key."""

from __future__ import annotations

import hmac
import re

from starlette.requests import Request

from ..tokens import Claims, InvalidToken
from .context import ctx
from .errors import ApiError

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def session_id(request: Request) -> str:
    sid = request.path_params["session_id"]
    if not SESSION_ID.match(sid):
        raise ApiError(404, "session_not_found", "No session with this id.")
    return sid  # type: ignore[no-any-return]


def authorize(request: Request, sid: str, roles: tuple[str, ...]) -> Claims:
    """401 for a missing/invalid token, 403 for a token of another session or a role not allowed."""
    token = bearer(request)
    if token is None:
        raise ApiError(401, "unauthorized", "Send 'Authorization: Bearer <session token>'.")
    try:
        claims = ctx(request).signer.verify(token)
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", f"The token is not valid: {exc}.") from None
    if claims.session_id != sid:
        raise ApiError(403, "forbidden", "This token belongs to another session.")
    if claims.role not in roles:
        raise ApiError(403, "forbidden", f"The {claims.role} role may not do this.")
    return claims


def require_api_key(request: Request) -> None:
    key = ctx(request).settings.api_key
    if not key:
        return
    given = bearer(request)
    if given is None or not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "unauthorized", "This server requires 'Authorization: Bearer <api key>'.")
