"""The y-websocket wire format: lib0 varints, message types, awareness payloads.

Why our own codec for awareness: pycrdt's ``Encoder.write_var_string`` writes a *character*
count, but lib0 (the JS client) reads a *byte* count, so a name like "José" breaks the frame.
Everything here works on bytes and is checked against truncation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

MSG_SYNC = 0
MSG_AWARENESS = 1
MSG_AUTH = 2
MSG_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2


class CloseCode(IntEnum):
    """Every WebSocket close code the server sends; docs/websocket-protocol.md lists what clients do with each.

    y-websocket 3.1 and later treat 4400-4499 as final (the default ``shouldReconnect`` is
    ``!(code >= 4400 && code < 4500)``); every other code, and a failed handshake (seen as 1006),
    makes them retry with back-off. 1.x, 2.x and 3.0 retry after every code. So 44xx is only for what
    reconnecting cannot fix.
    """

    NORMAL = 1000
    MALFORMED = 1007  # a frame or update that does not decode
    POLICY_VIOLATION = 1008  # a presence flood: refused awareness entries over --presence-max-refused
    INTERNAL_ERROR = 1011  # storage failed; the client reconnects and re-sends its edits
    RESTARTING = 1012  # the server is shutting down (sent by uvicorn on SIGTERM)
    SLOW_CONSUMER = 1013  # the send queue of a client that does not read overflowed
    UNAUTHORIZED = 4401  # missing, invalid or expired token
    FORBIDDEN = 4403  # token of another session, or an origin that is not allowed
    SESSION_NOT_FOUND = 4404  # no such session, or it was deleted
    SESSION_EXPIRED = 4410  # expired and deleted by the sweeper
    # an update past --max-document-size or --session-storage-quota, or a message over --max-message-size
    # (oversize.py: in place of uvicorn's 1009, which every y-websocket retries)
    DOCUMENT_TOO_LARGE = 4413


class ProtocolError(ValueError):
    """A frame that does not follow the y-websocket protocol: its connection is closed with ``close_code``."""

    close_code = CloseCode.MALFORMED
    what = "malformed message"

    @property
    def close_reason(self) -> str:
        return f"{self.what}: {self}"[:120]  # a close reason is at most 123 bytes


class UnsupportedContent(ProtocolError):
    """Content the server would not keep exactly (``sync/exact.py``). Never reaches a connection:
    ``updates.decode`` catches it and lists the struct, which is neutralised (``sync/neutral.py``)."""


def write_var_uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


class Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def var_uint(self) -> int:
        buf = self.buf
        pos = self.pos
        if pos >= len(buf):
            raise ProtocolError("truncated varint")
        b = buf[pos]
        pos += 1
        if b < 0x80:  # most values (lengths, counts, clocks of short documents) take one byte
            self.pos = pos
            return b
        n = b & 0x7F
        end = len(buf)
        if pos + 4 <= end:  # a Yjs clientID (32 bits) takes five bytes: read without the loop
            b1, b2, b3, b4 = buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]
            if b1 < 0x80:
                self.pos = pos + 1
                return n | b1 << 7
            if b2 < 0x80:
                self.pos = pos + 2
                return n | (b1 & 0x7F) << 7 | b2 << 14
            if b3 < 0x80:
                self.pos = pos + 3
                return n | (b1 & 0x7F) << 7 | (b2 & 0x7F) << 14 | b3 << 21
            if b4 < 0x80:
                self.pos = pos + 4
                return n | (b1 & 0x7F) << 7 | (b2 & 0x7F) << 14 | (b3 & 0x7F) << 21 | b4 << 28
        shift = 7
        while True:
            if pos >= end:
                raise ProtocolError("truncated varint")
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return n
            shift += 7
            if shift > 63:
                raise ProtocolError("varint too long")

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        end = self.pos + length
        if end > len(self.buf):
            raise ProtocolError("truncated byte array")
        data = self.buf[self.pos : end]
        self.pos = end
        return data


@dataclass(frozen=True)
class SyncMessage:
    kind: int  # SYNC_STEP1 / SYNC_STEP2 / SYNC_UPDATE
    payload: bytes  # state vector (step 1) or update (step 2 / update)


EMPTY_STATE_VECTOR = b"\x00"  # lib0: zero clients


def ignored(frame: bytes) -> bool:
    """A binary frame the server reads and drops, as the reference server does (it neither answers nor
    closes): an empty frame, auth (``2``: authentication is the URL token), a message type it does not
    know (a newer protocol's, another provider's), a sync message of a sub-type it does not know."""
    if not frame:
        return True
    kind = frame[0]
    if kind == MSG_SYNC:
        return len(frame) > 1 and frame[1] > SYNC_UPDATE
    return kind == MSG_AUTH or kind > MSG_QUERY_AWARENESS


def parse_sync(frame: bytes) -> SyncMessage:
    """A sync message; a step 1 with a zero-length state vector asks for everything, like an empty one
    (Yjs and Yrs both encode "no clients" as one zero byte, but a client that sends nothing should not be
    closed for it)."""
    r = Reader(frame, 1)
    kind = r.var_uint()
    if kind not in (SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE):
        raise ProtocolError(f"unknown sync message type {kind}")
    payload = r.var_bytes()
    if kind == SYNC_STEP1 and not payload:
        payload = EMPTY_STATE_VECTOR
    return SyncMessage(kind, payload)


def sync_frame(kind: int, payload: bytes) -> bytes:
    return bytes((MSG_SYNC, kind)) + write_var_bytes(payload)


AUTH_PERMISSION_DENIED = 0  # y-protocols auth: the only auth message there is


def permission_denied_frame(reason: str) -> bytes:
    """A y-protocols auth message ``permission denied``: y-websocket (every version) logs the reason
    with ``console.warn`` and stays connected; pycrdt's provider ignores it."""
    return bytes((MSG_AUTH, AUTH_PERMISSION_DENIED)) + write_var_bytes(reason.encode())


@dataclass(frozen=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: bytes  # the JSON text as UTF-8 bytes; b"null" means "removed"

    @property
    def removed(self) -> bool:
        return self.state == b"null"


MAX_AWARENESS_ENTRIES = 10_000  # per message; snapshots are split so that echoes stay under it


def parse_awareness(frame: bytes) -> list[AwarenessEntry]:
    """Decode ``[1, varBytes(update)]``; the update is ``n × (clientID, clock, varString)``."""
    return list(iter_awareness(frame))


def iter_awareness(frame: bytes) -> Iterator[AwarenessEntry]:
    """The entries of an awareness message, decoded as they are consumed (a reader that stops
    early pays for what it read).

    Only the structure is checked here (a truncated payload is a ``ProtocolError``); whether a
    state is UTF-8 JSON is the room's decision per entry (``sync.awareness``). Varints are decoded
    inline: this loop runs for every entry of every presence message.
    """
    outer = Reader(frame, 1)
    length = outer.var_uint()
    end = outer.pos + length
    if end > len(frame):
        raise ProtocolError("truncated byte array")
    buf = frame
    r = Reader(frame, outer.pos)
    count = r.var_uint()
    if count > MAX_AWARENESS_ENTRIES:
        raise ProtocolError("too many awareness entries")
    pos = r.pos
    for _ in range(count):
        values = [0, 0, 0]
        for k in range(3):
            n = shift = 0
            while True:
                if pos >= end:
                    raise ProtocolError("truncated varint")
                b = buf[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 63:
                    raise ProtocolError("varint too long")
            values[k] = n
        stop = pos + values[2]
        if stop > end:
            raise ProtocolError("truncated byte array")
        yield AwarenessEntry(values[0], values[1], buf[pos:stop])
        pos = stop


def _entry_bytes(e: AwarenessEntry) -> bytes:
    return write_var_uint(e.client_id) + write_var_uint(e.clock) + write_var_bytes(e.state)


def awareness_frame(entries: list[AwarenessEntry]) -> bytes:
    body = write_var_uint(len(entries)) + b"".join(_entry_bytes(e) for e in entries)
    return bytes((MSG_AWARENESS,)) + write_var_bytes(body)


def awareness_frames(entries: list[AwarenessEntry], max_bytes: int, max_entries: int = MAX_AWARENESS_ENTRIES) -> list[bytes]:
    """``entries`` as awareness messages of at most ``max_bytes`` and ``max_entries`` each (one
    entry larger than ``max_bytes`` goes alone): a big presence reaches a newcomer in pieces it can take."""
    frames: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for e in entries:
        raw = _entry_bytes(e)
        if chunk and (size + len(raw) + 16 > max_bytes or len(chunk) >= max_entries):
            frames.append(_frame_of(chunk))
            chunk, size = [], 0
        chunk.append(raw)
        size += len(raw)
    if chunk:
        frames.append(_frame_of(chunk))
    return frames


def _frame_of(encoded: list[bytes]) -> bytes:
    return bytes((MSG_AWARENESS,)) + write_var_bytes(write_var_uint(len(encoded)) + b"".join(encoded))


def is_crdt_failure(exc: BaseException) -> bool:
    """True for errors pycrdt raises on bad input: ValueError and friends, and pyo3's
    ``PanicException`` (a BaseException) when Yrs panics on a crafted update — the document
    stays usable after one. Cancellation and interpreter exits are not failures."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"
