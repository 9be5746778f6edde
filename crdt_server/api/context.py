"""What request handlers share: settings, store, room registry, token signer, limits, Run."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from ..config import Settings
from ..execution import ExecutionService
from ..limits import TokenBuckets
from ..storage import Store
from ..sync import SessionServer
from ..tokens import TokenSigner


@dataclass
class AppContext:
    settings: Settings
    store: Store
    server: SessionServer
    signer: TokenSigner
    create_limit: TokenBuckets
    connect_limit: TokenBuckets
    run_limit: TokenBuckets  # POST /api/execute, per client IP
    execution: ExecutionService | None = None  # None with --execution off


def client_ip(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def ctx(conn: HTTPConnection) -> AppContext:
    return conn.app.state.ctx  # type: ignore[no-any-return]
