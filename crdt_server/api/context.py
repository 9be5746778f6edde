"""What request handlers share: settings, store, room registry, token signer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from ..config import Settings
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
    extras: dict[str, Any] = field(default_factory=dict)


def client_ip(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def ctx(conn: HTTPConnection) -> AppContext:
    return conn.app.state.ctx  # type: ignore[no-any-return]
