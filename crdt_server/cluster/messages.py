"""What processes tell each other over Redis: compact binary messages, each tagged with an HMAC.

Why a tag: Redis access alone (a shared Redis, a leaked password) must not let anyone inject edits
or close sockets. The key is derived from the server's signing secret, which every process of a
deployment shares (kept in the database), so only a process that could sign tokens can publish.
Why binary and bounded: every process parses every message on the channel; a message is refused
(``BadMessage``) unless every length is within its bound, before anything is acted upon.

Layout (big-endian): ``version u8 | kind u8 | instance 8 bytes | sid_len u8 | sid | doc u8 | body | tag 16``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from ..domain import ROLES
from ..storage.base import MAIN_DOC, NOTES_DOC

VERSION = 1
TAG_BYTES = 16
INSTANCE_BYTES = 8
MAX_MESSAGE = 8 * 1024 * 1024  # the largest message accepted; a bigger batch travels as a HEAD hint
MAX_SID = 64
MAX_ROWS = 10_000  # rows in one UPDATE
MAX_TEXT = 1024  # a CONTROL reason, a connection id
SESSION_ID = re.compile(rb"[A-Za-z0-9_-]{1,64}")
DOCS = (MAIN_DOC, NOTES_DOC)


class Kind(IntEnum):
    UPDATE = 1  # committed rows: (seq, update bytes)...
    HEAD = 2  # the log reached ``seq``: read the rows from the database (a batch too big for a message)
    CONTROL = 3  # a change of the session beside its document (``Action``)
    PRESENCE = 4  # awareness entries of one connection on the sending process
    PRESENCE_QUERY = 5  # "send me your presence of this session" (``seq``: a nonce, 0 when nobody waits)
    PRESENCE_DONE = 6  # the answer to the query ``seq`` is complete (sent after its PRESENCE messages)


class Action(IntEnum):
    DROP = 1  # the session is gone (deleted, expired): close its sockets with ``value`` as the code
    ROW = 2  # the session row changed (status, lock): re-read it
    TOKENS = 3  # tokens were re-issued: close sockets admitted with a generation below ``value``


class BadMessage(ValueError):
    """A message that is malformed, too big, or not tagged with this deployment's key."""


def bus_key(secret: str, prefix: str) -> bytes:
    """The tag key: derived from the signing secret (never the secret itself), per prefix."""
    return hmac.new(secret.encode(), b"crdt-server bus v1\0" + prefix.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Message:
    kind: Kind
    instance: bytes  # the sending process (its own messages are ignored)
    session_id: str
    doc: str
    rows: tuple[tuple[int, bytes], ...] = ()  # UPDATE
    seq: int = 0  # HEAD; the nonce of PRESENCE_QUERY and PRESENCE_DONE
    action: Action | None = None  # CONTROL
    value: int = 0  # CONTROL
    conn_id: str = ""  # PRESENCE: the connection on the sending process
    role: str = ""  # PRESENCE
    since: float = 0.0  # PRESENCE: when the connection opened
    left: bool = False  # PRESENCE: the connection is gone (``frame`` holds its removals)
    frame: bytes = b""  # PRESENCE: an awareness message (validated again on receipt, like a client's)


_SEQ_KINDS = (Kind.HEAD, Kind.PRESENCE_QUERY, Kind.PRESENCE_DONE)
_HEAD = struct.Struct(">BB8sB")
_ROW = struct.Struct(">QI")
_U64 = struct.Struct(">Q")
_CONTROL = struct.Struct(">Bq")
_PRESENCE = struct.Struct(">dBB")



def _text(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError("text field too long")
    return bytes([len(raw)]) + raw


def encode(key: bytes, m: Message) -> bytes:
    sid = m.session_id.encode()
    if not SESSION_ID.fullmatch(sid) or len(m.instance) != INSTANCE_BYTES:
        raise ValueError("bad session id or instance")
    parts = [_HEAD.pack(VERSION, m.kind, m.instance, len(sid)), sid, bytes([DOCS.index(m.doc)])]
    if m.kind == Kind.UPDATE:
        parts.append(struct.pack(">I", len(m.rows)))
        for seq, data in m.rows:
            parts += [_ROW.pack(seq, len(data)), data]
    elif m.kind in _SEQ_KINDS:
        parts.append(_U64.pack(m.seq))
    elif m.kind == Kind.CONTROL:
        assert m.action is not None
        parts.append(_CONTROL.pack(m.action, m.value))
    elif m.kind == Kind.PRESENCE:
        parts += [_PRESENCE.pack(m.since, ROLES.index(m.role), m.left), _text(m.conn_id), m.frame]
    body = b"".join(parts)
    return body + hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES]


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise BadMessage("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, s: struct.Struct) -> tuple[object, ...]:
        return s.unpack(self.take(s.size))

    def text(self) -> str:
        try:
            return self.take(self.take(1)[0]).decode()
        except UnicodeDecodeError:
            raise BadMessage("text not UTF-8") from None


def peek_session(data: bytes) -> tuple[bytes, str, str] | None:
    """(instance, session id, doc) without checking the tag: whether the message concerns this
    process at all, before paying for the HMAC. None if the header is malformed."""
    if len(data) < _HEAD.size + 2 + TAG_BYTES:
        return None
    version, _, instance, n = _HEAD.unpack_from(data)
    sid = data[_HEAD.size:_HEAD.size + n]
    doc = data[_HEAD.size + n] if len(data) > _HEAD.size + n else 255
    if version != VERSION or not SESSION_ID.fullmatch(sid) or doc >= len(DOCS):
        return None
    return instance, sid.decode(), DOCS[doc]


def decode(key: bytes, data: bytes) -> Message:
    """The message, or ``BadMessage``: checked tag first, then every field within its bound."""
    if len(data) > MAX_MESSAGE:
        raise BadMessage("too large")
    head = peek_session(data)
    if head is None:
        raise BadMessage("malformed header")
    body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES]):
        raise BadMessage("bad tag")
    instance, sid, doc = head
    kind_raw = body[1]
    r = _Reader(body, _HEAD.size + len(sid) + 1)
    try:
        kind = Kind(kind_raw)
    except ValueError:
        raise BadMessage(f"unknown kind {kind_raw}") from None
    m = Message(kind, instance, sid, doc)
    if kind == Kind.UPDATE:
        (count,) = r.unpack(struct.Struct(">I"))
        if not isinstance(count, int) or not 0 < count <= MAX_ROWS:
            raise BadMessage("bad row count")
        rows = []
        for _ in range(count):
            seq, n = r.unpack(_ROW)
            assert isinstance(seq, int) and isinstance(n, int)
            rows.append((seq, r.take(n)))
        m = Message(kind, instance, sid, doc, rows=tuple(rows))
    elif kind in _SEQ_KINDS:
        (seq,) = r.unpack(_U64)
        assert isinstance(seq, int)
        m = Message(kind, instance, sid, doc, seq=seq)
    elif kind == Kind.CONTROL:
        action, value = r.unpack(_CONTROL)
        try:
            m = Message(kind, instance, sid, doc, action=Action(action), value=int(value))  # type: ignore[call-overload,arg-type]
        except ValueError:
            raise BadMessage(f"unknown action {action}") from None
    elif kind == Kind.PRESENCE:
        since, role, left = r.unpack(_PRESENCE)
        assert isinstance(since, float) and isinstance(role, int)
        if role >= len(ROLES) or since != since:
            raise BadMessage("bad presence header")
        conn_id = r.text()
        m = Message(kind, instance, sid, doc, conn_id=conn_id, role=ROLES[role], since=since, left=bool(left),
                    frame=r.take(len(body) - r.pos))
    if r.pos != len(body):
        raise BadMessage("trailing bytes")
    return m
