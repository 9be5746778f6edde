"""What request handlers share: settings, the session service, the token signer, the rate limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from starlette.requests import HTTPConnection

from ..config import Settings
from ..limits import TokenBuckets
from ..service import SessionService
from ..tokens import TokenSigner


@dataclass
class AppContext:
    settings: Settings
    service: SessionService
    signer: TokenSigner
    create_limit: TokenBuckets
    connect_limit: TokenBuckets
    run_limit: TokenBuckets  # POST /api/execute, per client IP


def client_ip(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def ctx(conn: HTTPConnection) -> AppContext:
    return cast(AppContext, conn.app.state.ctx)
