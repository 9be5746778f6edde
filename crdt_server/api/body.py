"""Reading JSON bodies: size limit (413), syntax (400), schema (422)."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from .context import ctx
from .errors import ApiError

M = TypeVar("M", bound=BaseModel)


async def read_model(request: Request, model: type[M], *, allow_empty: bool = False) -> M:
    limit = ctx(request).settings.max_body_size
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    except ClientDisconnect:
        raise ApiError(400, "bad_request", "The client went away while sending the body.") from None
    if not body.strip() and allow_empty:
        body = bytearray(b"{}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_field", "The body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise ApiError(422, "invalid_field", f"{where}: {first['msg']}") from None
