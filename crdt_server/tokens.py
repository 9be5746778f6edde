"""Signed per-session role tokens (HS256 JWT) and the signing secret.

A token names its session, role and token generation (``gen``). It stays valid while the session
exists and ``gen`` is the session's current generation (checked by ``SessionService.check_token``):
re-issuing a session's tokens advances the generation and so revokes every older token at once,
and a deleted session's tokens find nothing. ``exp`` is therefore not the session's (moving)
expiry but a fixed, long cap (``--token-ttl``, a year by default) that bounds how long a leaked
token could ever be used, whatever happens to the server-side check.

The secret comes from CRDT_SERVER_SECRET, or is generated once and kept in the data directory
(mode 0600) so tokens survive restarts; with PostgreSQL it is kept in the database instead, so every
process serving it signs and accepts the same tokens (never one generated per process). Token
values are never logged.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from .config import SECRET_FILE
from .config_checks import MIN_SECRET_LENGTH
from .domain import ROLES, Role
from .logs import add_secret
from .storage import PostgresStore, SQLiteStore
from .storage.files import private_dir, private_file, write_atomic

_ALGORITHM = "HS256"
_SIGNED_FORM = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")  # what ``issue`` makes
CACHED_TOKEN_CHARS = 512  # ours are ~200


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Claims:
    session_id: str
    role: Role
    expires_at: float
    generation: int = 0  # tokens issued before generations existed count as the first


def load_secret_file(data_dir: Path) -> str | None:
    """The secret kept in the data directory, if there is one (the backup command copies it).

    An empty or short file is refused rather than silently signing tokens with it."""
    path = data_dir / SECRET_FILE
    try:
        stored = path.read_text().strip()
    except FileNotFoundError:
        return None
    if len(stored) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"{path} holds no usable secret ({len(stored)} characters, need {MIN_SECRET_LENGTH}); "
            "delete it to generate a new one (issued tokens stop working) or set CRDT_SERVER_SECRET"
        )
    add_secret(stored)  # never in a log line
    private_file(path)  # a key from an older version may be world-readable
    return stored


def load_secret(configured: str, data_dir: Path) -> str:
    """The configured secret, else the one kept in the data directory (generated on first start,
    written atomically: a full disk leaves no file, never an empty one)."""
    if configured:
        return configured
    stored = load_secret_file(data_dir)
    if stored is not None:
        return stored
    private_dir(data_dir)
    secret = secrets.token_urlsafe(48)
    write_atomic(data_dir / SECRET_FILE, secret.encode())
    add_secret(secret)
    return secret


async def resolve_secret(configured: str, data_dir: Path, store: SQLiteStore | PostgresStore) -> str:
    """The secret this process signs with: configured, else kept by the store (PostgreSQL: one row
    every process on the database reads, written by the first), else kept in the data directory."""
    if configured:
        return configured
    if not isinstance(store, PostgresStore):
        return load_secret(configured, data_dir)
    secret = await store.kept_secret(secrets.token_urlsafe(48))
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"the signing secret kept in the database is too short ({len(secret)} characters, need "
                         f"{MIN_SECRET_LENGTH}); set CRDT_SERVER_SECRET or replace the row of server_secret")
    add_secret(secret)
    return secret


class TokenSigner:
    """Signs and verifies tokens; remembers the last ``cache_entries`` tokens it verified.

    Why the cache: PyJWT takes 50-200 µs to verify one token (base64 alphabet checks and key
    preparation in Python), and a token is verified on every connect. One token serves many sockets
    (every observer of a session shares a link; the interviewer's page opens two sockets; every
    reconnect after a network blip or a restart presents the same token again). Only a token whose
    signature verified is kept, keyed by its exact text, and only in the form the server signs
    (unpadded base64url, at most ``CACHED_TOKEN_CHARS``): a holder of a valid token cannot fill the
    cache with other spellings of it that a lenient decoder would accept. ``exp`` is checked again on
    every hit, and the generation and the session are checked by the caller either way
    (``SessionService.check_token``). The oldest entry is dropped first."""

    def __init__(self, secret: str, ttl: float, cache_entries: int = 0) -> None:
        self._secret = secret
        self.ttl = ttl
        self._cache_entries = cache_entries
        self._verified: dict[str, Claims] = {}

    def issue(self, session_id: str, role: str, generation: int = 0, now: float | None = None) -> str:
        iat = int(now or time.time())
        claims = {"sid": session_id, "role": role, "gen": generation, "iat": iat, "exp": int(iat + self.ttl)}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def issue_all(self, session_id: str, generation: int = 0) -> dict[str, str]:
        return {role: self.issue(session_id, role, generation) for role in ROLES}

    def verify(self, token: str) -> Claims:
        claims = self._verified.get(token)
        if claims is not None:
            if claims.expires_at <= time.time():  # PyJWT's rule for ``exp``
                del self._verified[token]
                raise InvalidToken("token expired")
            return claims
        claims = self._decode(token)
        if self._cache_entries and len(token) <= CACHED_TOKEN_CHARS and _SIGNED_FORM.fullmatch(token):
            if len(self._verified) >= self._cache_entries:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = claims
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            data = jwt.decode(token, self._secret, algorithms=[_ALGORITHM], options={"require": ["exp", "sid", "role"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.PyJWTError:
            raise InvalidToken("invalid token") from None
        generation = data.get("gen", 0)
        if (data.get("role") not in ROLES or not isinstance(data.get("sid"), str)
                or type(generation) is not int or generation < 0):
            raise InvalidToken("invalid token")
        return Claims(data["sid"], data["role"], float(data["exp"]), generation)
