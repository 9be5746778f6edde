"""Reading requests: JSON bodies (size limit 413, syntax 400, schema 422) and integer query parameters.

Any body at all must end in one of these answers: invalid UTF-8, unpaired surrogates, numbers
with thousands of digits and absurd nesting are all client errors, never a 500.
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from .context import ctx
from .errors import ApiError

M = TypeVar("M", bound=BaseModel)

_DECIMAL = re.compile(r"[0-9]{1,19}")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not _DECIMAL.fullmatch(declared) or int(declared) > limit):
        raise _too_large(limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _too_large(limit)
    except ClientDisconnect:
        raise ApiError(400, "bad_request", "The client went away while sending the body.") from None
    return bytes(body)


def parse_json(body: bytes) -> object:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):  # includes "too many digits" for huge integers
        raise ApiError(400, "malformed_json", "The body is not valid JSON.") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "The body is nested too deeply.") from None
    try:  # JSON may spell unpaired surrogates ("\ud800"); nothing downstream can store them
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "malformed_json", "The body contains an unpaired UTF-16 surrogate.") from None
    except (RecursionError, ValueError):
        raise ApiError(400, "malformed_json", "The body is nested too deeply.") from None
    return data


async def read_model(request: Request, model: type[M], *, allow_empty: bool = False) -> M:
    body = await read_body(request, ctx(request).settings.max_body_size)
    if allow_empty and not body.strip():
        body = b"{}"
    data = parse_json(body)
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_field", "The body must be a JSON object.")
    try:
        return model.model_validate(data, strict=True)  # JSON types as the schema says: no "1" for 1, 0 for false
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        if len(where) > 80:
            where = where[:77] + "..."
        raise ApiError(422, "invalid_field", f"{where}: {first['msg']}") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "The body is nested too deeply.") from None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; anything else is a 422."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not _DECIMAL.fullmatch(raw) or not low <= int(raw) <= high:
        raise ApiError(422, "invalid_field", f"{name}: must be an integer from {low} to {high}")
    return int(raw)


_NUMBER = re.compile(r"[0-9]{1,15}(\.[0-9]{1,9})?")


def query_float(request: Request, name: str, low: float, high: float) -> float | None:
    """A non-negative decimal query parameter (no exponent, no nan/inf) within [low, high], or None if absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not _NUMBER.fullmatch(raw) or not low <= float(raw) <= high:
        raise ApiError(422, "invalid_field", f"{name}: must be a number from {low:g} to {high:g}")
    return float(raw)
