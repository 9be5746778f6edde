"""What a setting's value may be: the checks ``config.Settings`` attaches to each option, and the URL
helpers that keep passwords out of messages.

Each check returns None when the value is fine, else what is wrong with it (one line, shown beside the
flag and the env var). Kept apart from ``config`` so the table of options reads on its own.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

Check = Callable[[Any], "str | None"]  # None when the value is fine, else what is wrong with it
MIN_SECRET_LENGTH = 32


def anything(_: Any) -> str | None:
    return None


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def between(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def not_empty(value: Any) -> str | None:
    return None if str(value).strip() else "must not be empty"


def secret_length(value: Any) -> str | None:
    if value == "" or len(value) >= MIN_SECRET_LENGTH:
        return None
    return (
        f"must be at least {MIN_SECRET_LENGTH} characters: tokens signed with a short secret can be "
        "brute-forced offline from any one token (leave it unset to have one generated)"
    )


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def db_url(value: Any) -> str | None:
    if value == "" or value.startswith("sqlite:///"):
        return None
    if not value.startswith(POSTGRES_SCHEMES):
        return "must be sqlite:///path.db, postgresql://… or postgres://…"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if not (parts.path.strip("/") or parts.username):
        return "must name the database (postgresql://user@host:5432/dbname)"
    return None


def redact_url(url: str) -> str:
    """``url`` without its password (for error messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "(unparsable URL)"


def url_password(url: str) -> str:
    """The password in a database URL, or ''."""
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:
        return ""


def redis_url(value: Any) -> str | None:
    if value == "":
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    ok = parts.scheme in ("redis", "rediss") and parts.hostname or parts.scheme == "unix" and parts.path
    return None if ok else "must be redis://host:6379/0, rediss://… or unix:///path/redis.sock"


def schema_name(value: Any) -> str | None:
    if value.startswith("pg_"):
        return "names starting with pg_ are reserved by PostgreSQL"
    if re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
        return None
    return "must be a lower-case SQL identifier (letters, digits, _; at most 63; not starting with a digit)"


def origin_list(value: Any) -> str | None:
    for origin in (o.strip() for o in value.split(",")):
        if origin and origin != "*" and not (origin.startswith(("http://", "https://")) and "/" not in origin.split("://", 1)[1].rstrip("/")):
            return f"{origin!r} is not an origin like https://editor.example or http://localhost:5173"
    return None


def address_list(value: Any) -> str | None:
    for item in (i.strip() for i in value.split(",")):
        if not item or item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)"
    return None
