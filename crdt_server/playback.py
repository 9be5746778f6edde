"""Playback: the document as it was at a moment, and the raw update stream for browser players.

A read of the update log, never a second recording (docs/playback.md). A moment is rebuilt from the
newest checkpoint at or before it (the store keeps one snapshot per block of rows) plus the rows after
it, one transaction per row as loading does, in a worker thread. Never through ``Doc.from_snapshot``:
pycrdt 0.14 panics on real histories (docs/design/storage.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import anyio
from pycrdt import Map

from .document import META, read_text
from .languages import canonical
from .storage import SessionNotFound, SessionRecord, Store, UpdateRecord
from .sync.loader import rebuild

STREAM_MAX_ROWS = 10_000  # records per stream response; the rest via X-Next-From-Seq
STREAM_MAX_BYTES = 8 * 1024 * 1024  # update bytes per stream response (at least one record is always sent)
STREAM_MEDIA_TYPE = "application/octet-stream"
_HEADER = struct.Struct(">IQd")  # record length, seq, server time


class OutOfRange(ValueError):
    """A sequence number past the session's log (422)."""


@dataclass(frozen=True)
class Moment:
    at: float
    seq: int
    code: str
    language: str


async def moment(store: Store, record: SessionRecord, *, at: float | None = None, seq: int | None = None) -> Moment:
    """The document after every row stored at or before ``at`` (unix seconds) or up to ``seq``.

    Before the first edit it is the starter code (row 1 is the server's initial document); ``at`` past
    the end is the current text; ``seq`` past the end raises ``OutOfRange``."""
    found, last = await store.seq_at(record.id, at if at is not None else float("inf"))
    if last == 0:  # deleted since the caller read its row (every session has row 1)
        raise SessionNotFound(record.id)
    if seq is None:
        seq = max(found, 1)
    elif seq > last:
        raise OutOfRange(f"seq: past the end of the log (last is {last})")
    snapshot, _, tail = await store.playback_rows(record.id, seq)
    doc = await anyio.to_thread.run_sync(rebuild, record.id, snapshot, tail)
    language = doc.get(META, type=Map).get("language")
    when = at if at is not None else (tail[-1].ts if tail and tail[-1].seq == seq else await _ts_of(store, record, seq))
    return Moment(when, seq, read_text(doc), _language(language) or record.language)


async def _ts_of(store: Store, record: SessionRecord, seq: int) -> float:
    """The commit time of row ``seq`` when the rebuild started from a checkpoint at exactly it."""
    rows = await store.read_updates(record.id, seq - 1, 1)
    return rows[0].ts if rows else record.created_at


def _language(value: Any) -> str | None:
    return canonical(value) if isinstance(value, str) else None


def encode_record(u: UpdateRecord) -> bytes:
    """One stream record: big-endian u32 length of what follows, u64 seq, f64 time, three u16-prefixed
    UTF-8 strings (role, connection id, display name), then the update bytes (docs/playback.md)."""
    strings = b"".join(struct.pack(">H", len(b)) + b for b in (s.encode()[:65535] for s in (u.role, u.conn_id, u.name)))
    body_len = _HEADER.size - 4 + len(strings) + len(u.data)
    return _HEADER.pack(body_len, u.seq, u.ts) + strings + u.data


async def stream(store: Store, record: SessionRecord, from_seq: int, to_seq: int | None) -> tuple[bytes, int | None]:
    """Records ``from_seq``..``to_seq`` (inclusive) up to the per-response bounds, and the ``from_seq``
    to ask for next (None when nothing more is in range)."""
    limit = STREAM_MAX_ROWS if to_seq is None else max(0, min(STREAM_MAX_ROWS, to_seq - from_seq + 1))
    rows = await store.read_updates(record.id, from_seq - 1, limit + 1) if limit else []
    out = bytearray()
    sent = 0
    for u in rows[:limit]:
        if sent and len(out) + len(u.data) > STREAM_MAX_BYTES:
            break
        out += encode_record(u)
        sent += 1
    more = sent < len(rows) and (to_seq is None or rows[sent].seq <= to_seq)
    return bytes(out), (rows[sent].seq if more else None)
