"""``GET /api/sessions/{id}/timeline``: who typed what and when (interviewer only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..domain import INTERVIEWER
from .auth import authorize
from .body import query_int
from .context import ctx
from .errors import model_response
from .models import Timeline

BUCKET = 10  # seconds per point by default
MAX_BUCKET = 3600


async def get_timeline(request: Request) -> Response:
    sid, _ = await authorize(request, INTERVIEWER)
    c = ctx(request)
    bucket = query_int(request, "bucket", BUCKET, 1, MAX_BUCKET)
    result = await c.service.timeline(sid, bucket=bucket, paste_threshold=c.settings.paste_threshold)
    return model_response(Timeline.model_validate(result))
