"""Signed, expiring, per-session role tokens (HS256 JWT) and the signing secret.

The secret comes from CRDT_SERVER_SECRET, or is generated once and kept in the data directory
(mode 0600) so tokens survive restarts. Token values are never logged.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from .domain import ROLES, Role
from .storage.files import private_dir, private_file, write_atomic

_ALGORITHM = "HS256"


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Claims:
    session_id: str
    role: Role
    expires_at: float


MIN_SECRET_LENGTH = 32


def load_secret(configured: str, data_dir: Path) -> str:
    """The configured secret, else the one kept in the data directory (generated on first start).

    Written atomically (a full disk leaves no file, never an empty one); an empty or short file is
    refused rather than silently signing tokens with it."""
    if configured:
        return configured
    path = data_dir / "secret.key"
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        pass
    else:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"{path} holds no usable secret ({len(secret)} characters, need {MIN_SECRET_LENGTH}); "
                "delete it to generate a new one (issued tokens stop working) or set --secret"
            )
        private_file(path)  # a key from an older version may be world-readable
        return secret
    private_dir(data_dir)
    secret = secrets.token_urlsafe(48)
    write_atomic(path, secret.encode())
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
