"""REST endpoints for playback: a moment's text, and the raw update stream (docs/playback.md)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..domain import INTERVIEWER
from ..playback import STREAM_MEDIA_TYPE, OutOfRange
from .auth import authorize
from .body import query_float, query_int
from .context import ctx
from .errors import ApiError, model_response
from .models import Playback

MAX_SEQ = 2**62
MAX_AT = 1e11  # unix seconds (year 5138); later moments are "now" anyway


def _optional_seq(request: Request, name: str) -> int | None:
    """An optional sequence number: absent is None, anything but 1..MAX_SEQ (an empty value too) is 422."""
    if request.query_params.get(name) is None:
        return None
    value = query_int(request, name, 0, 1, MAX_SEQ)
    if value == 0:
        raise ApiError(422, "invalid_field", f"{name}: must be an integer from 1 to {MAX_SEQ}")
    return value


async def playback(request: Request) -> Response:
    """The document after every update stored at or before ``at`` (or up to ``seq``): exactly one of them."""
    sid, _ = await authorize(request, INTERVIEWER)
    at = query_float(request, "at", 0, MAX_AT)
    seq = _optional_seq(request, "seq")
    if (at is None) == (seq is None):
        raise ApiError(422, "invalid_field", "give exactly one of at (unix seconds) or seq")
    try:
        m = await ctx(request).service.playback(sid, at=at, seq=seq)
    except OutOfRange as exc:
        raise ApiError(422, "invalid_field", str(exc)) from None
    return model_response(Playback(at=m.at, seq=m.seq, code=m.code, language=m.language))


async def playback_updates(request: Request) -> Response:
    """Length-prefixed records of the stored updates, ``from_seq``..``to_seq`` inclusive."""
    sid, _ = await authorize(request, INTERVIEWER)
    from_seq = _optional_seq(request, "from_seq") or 1
    to_seq = _optional_seq(request, "to_seq")
    if to_seq is not None and to_seq < from_seq:
        raise ApiError(422, "invalid_field", "to_seq: must not be less than from_seq")
    body, next_from = await ctx(request).service.playback_updates(sid, from_seq, to_seq)
    headers = {"X-Next-From-Seq": str(next_from)} if next_from is not None else {}
    return Response(body, media_type=STREAM_MEDIA_TYPE, headers={**headers, "Cache-Control": "no-store"})
