"""Presence (awareness) states made safe to report: everything in them is client-controlled.

Read by the room (``sync.awareness``), which validates every state once when it arrives, keeps a
summary of it for the participants list (REST), and remembers a connection's display name for the
update log and the ``participant_left`` event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .domain import MAX_NAME

MAX_JSON_DEPTH = 16


def clean_str(s: str, limit: int | None = None) -> str:
    """Replace unpaired surrogates (possible in JSON from clients) so the text encodes as UTF-8."""
    if limit is not None:
        s = s[:limit]
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in s)


def clean_json(value: Any, depth: int = 0) -> Any:
    """A JSON value from a client, made safe to re-serialise: finite numbers, valid strings, bounded depth."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError("too deep")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not finite")
        return value
    if isinstance(value, str):
        return clean_str(value)
    if isinstance(value, list):
        return [clean_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {clean_str(str(k)): clean_json(v, depth + 1) for k, v in value.items()}
    raise ValueError("not JSON")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_client_json(raw: bytes) -> Any:
    """A presence state as the JS client's ``JSON.parse`` reads it, or ``ValueError``.

    y-protocols decodes a state with a fatal UTF-8 decoder and ``JSON.parse``, and throws on the
    whole message when one entry is bad, so everything the server relays must pass both. Python's
    parser is stricter where it differs (huge integers, absurd nesting) and NaN/Infinity, which it
    alone accepts, are refused.
    """
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(str(exc)[:80]) from None


def parse_state(raw: bytes | None) -> Any:
    """An awareness state's JSON, or None when it is absent, removed or malformed."""
    if raw is None or raw == b"null":
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # client data: malformed or absurdly nested
        return None


def user_field(state: Any, key: str) -> str | None:
    """``state.user.<key>`` as a safe string of at most ``MAX_NAME`` characters, or None."""
    user = state.get("user") if isinstance(state, dict) else None
    value = user.get(key) if isinstance(user, dict) else None
    if not isinstance(value, str) or not value:
        return None
    return clean_str(value, MAX_NAME)


FIELDS = ("name", "color", "cursor")


def state_summary(state: Any) -> dict[str, Any]:
    """Name, colour and cursor of one state, each None when absent or not well-typed."""
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    if not isinstance(state, dict):
        return out
    out["name"] = user_field(state, "name")
    out["color"] = user_field(state, "color")
    if state.get("cursor") is not None:
        try:
            out["cursor"] = clean_json(state["cursor"])
        except (ValueError, RecursionError):
            pass
    return out


def merge(summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One connection's name, colour and cursor from its states' summaries (first set value of each wins)."""
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    for part in summaries:
        for key in FIELDS:
            if out[key] is None:
                out[key] = part[key]
    return out


def summary(states: Iterable[Any]) -> dict[str, Any]:
    """Name, colour and cursor of one connection from its states (first well-typed value of each wins)."""
    return merge(state_summary(s) for s in states)
