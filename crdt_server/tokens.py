"""Signed, expiring, per-session role tokens (HS256 JWT) and the signing secret.

The secret comes from CRDT_SERVER_SECRET, or is generated once and kept in the data directory
(mode 0600) so tokens survive restarts. Token values are never logged.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from .domain import ROLES, Role
from .logs import add_secret

_ALGORITHM = "HS256"


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Claims:
    session_id: str
    role: Role
    expires_at: float


def load_secret_file(data_dir: Path) -> str | None:
    """The secret kept in the data directory, if there is one (the backup command copies it)."""
    try:
        stored = (data_dir / "secret.key").read_text().strip()
    except FileNotFoundError:
        return None
    add_secret(stored)  # never in a log line
    return stored


def load_secret(configured: str, data_dir: Path) -> str:
    if configured:
        return configured
    stored = load_secret_file(data_dir)
    if stored is not None:
        return stored
    path = data_dir / "secret.key"
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    add_secret(secret)
    return secret


class TokenSigner:
    def __init__(self, secret: str, ttl: float) -> None:
        self._secret = secret
        self.ttl = ttl

    def issue(self, session_id: str, role: str, now: float | None = None) -> str:
        exp = int((now or time.time()) + self.ttl)
        return jwt.encode({"sid": session_id, "role": role, "exp": exp}, self._secret, algorithm=_ALGORITHM)

    def issue_all(self, session_id: str) -> dict[str, str]:
        return {role: self.issue(session_id, role) for role in ROLES}

    def verify(self, token: str) -> Claims:
        try:
            data = jwt.decode(token, self._secret, algorithms=[_ALGORITHM], options={"require": ["exp", "sid", "role"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.PyJWTError:
            raise InvalidToken("invalid token") from None
        if data.get("role") not in ROLES or not isinstance(data.get("sid"), str):
            raise InvalidToken("invalid token")
        return Claims(data["sid"], data["role"], float(data["exp"]))
