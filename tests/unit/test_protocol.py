"""The y-websocket / lib0 codec (crdt_server/sync/protocol.py), in process.

Each test names the bug it catches: a varint off by one bit at a 7-bit boundary, an IndexError
escaping on truncated input (the room would log an internal error instead of closing with 1007),
a *character* count where lib0 reads a *byte* count (pycrdt's own encoder does this; a "José"
breaks the JS client's frame).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Text, create_update_message

from crdt_server.sync import protocol as p
from crdt_server.sync.protocol import AwarenessEntry, ProtocolError, Reader

# value -> its lib0 varuint encoding, written out by hand
VARUINTS = {
    0: b"\x00",
    1: b"\x01",
    127: b"\x7f",
    128: b"\x80\x01",
    255: b"\xff\x01",
    16383: b"\xff\x7f",
    16384: b"\x80\x80\x01",
    2**21 - 1: b"\xff\xff\x7f",
    2**21: b"\x80\x80\x80\x01",
    2**32: b"\x80\x80\x80\x80\x10",
    2**53: b"\x80\x80\x80\x80\x80\x80\x80\x10",
    2**53 - 1: b"\xff\xff\xff\xff\xff\xff\xff\x0f",  # Number.MAX_SAFE_INTEGER, the largest JS clientID
}


@pytest.mark.parametrize(("value", "encoded"), list(VARUINTS.items()))
def test_var_uint_known_encodings(value: int, encoded: bytes) -> None:
    assert p.write_var_uint(value) == encoded
    r = Reader(encoded)
    assert r.var_uint() == value
    assert r.pos == len(encoded)


@given(st.integers(min_value=0, max_value=2**63))
def test_var_uint_round_trip(value: int) -> None:
    encoded = p.write_var_uint(value)
    assert all(b & 0x80 for b in encoded[:-1]) and encoded[-1] < 0x80
    assert Reader(encoded + b"rest").var_uint() == value


def test_reader_reads_consecutive_values_from_an_offset() -> None:
    buf = b"\xaa" + p.write_var_uint(300) + p.write_var_bytes(b"xyz") + p.write_var_bytes(b"")
    r = Reader(buf, 1)
    assert r.var_uint() == 300
    assert r.var_bytes() == b"xyz"
    assert r.var_bytes() == b""
    assert r.pos == len(buf)


def test_var_bytes_length_prefix() -> None:
    data = bytes(range(256)) * 2  # 512 bytes: a two-byte length prefix
    encoded = p.write_var_bytes(data)
    assert encoded[:2] == b"\x80\x04"
    assert Reader(encoded).var_bytes() == data


@pytest.mark.parametrize("buf", [b"", b"\x80", b"\xff\xff", b"\x05abcd", b"\x80\x01" + b"a" * 127])
def test_truncated_reads_raise_protocol_error(buf: bytes) -> None:
    with pytest.raises(ProtocolError):
        r = Reader(buf)
        r.var_bytes()


def test_overlong_varint_is_refused() -> None:
    assert Reader(b"\xff" * 9 + b"\x01").var_uint() == 2**64 - 1  # ten bytes: the longest accepted
    with pytest.raises(ProtocolError, match="too long"):
        Reader(b"\x80" * 10 + b"\x01").var_uint()
    with pytest.raises(ProtocolError):
        Reader(b"\x80" * 1000).var_uint()  # never an endless (or IndexError) loop


# -- sync messages ----------------------------------------------------------------------------------


def _real_update() -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("code", type=Text).insert(0, "print('José 😀 日本')\n")
    return doc.get_update()


@pytest.mark.parametrize("kind", [p.SYNC_STEP1, p.SYNC_STEP2, p.SYNC_UPDATE])
@pytest.mark.parametrize("payload", [b"", b"\x00", bytes(range(256)), b"u" * 20_000])
def test_sync_round_trip(kind: int, payload: bytes) -> None:
    frame = p.sync_frame(kind, payload)
    assert frame[:2] == bytes((p.MSG_SYNC, kind))
    msg = p.parse_sync(frame)
    # a zero-length state vector asks for everything, like the one-byte empty one
    expected = p.EMPTY_STATE_VECTOR if kind == p.SYNC_STEP1 and not payload else payload
    assert (msg.kind, msg.payload) == (kind, expected)


@pytest.mark.parametrize("frame,ignored", [
    (b"", True),  # no type at all
    (bytes([p.MSG_AUTH, 0, 1, 65]), True),
    (bytes([4]), True), (bytes([9, 1, 2]), True), (bytes([0x80, 0x01]), True),  # unknown types, 128 too
    (bytes([p.MSG_SYNC, 3, 0]), True), (bytes([p.MSG_SYNC, 0x80, 0x01, 0]), True),  # unknown sync sub-types
    (bytes([p.MSG_SYNC]), False),  # a truncated sync message is malformed, not unknown
    (p.sync_frame(p.SYNC_STEP1, b""), False), (p.sync_frame(p.SYNC_UPDATE, b"\x00\x00"), False),
    (bytes([p.MSG_AWARENESS, 1, 0]), False), (bytes([p.MSG_QUERY_AWARENESS]), False),
])
def test_frames_the_reference_server_ignores(frame: bytes, ignored: bool) -> None:
    assert p.ignored(frame) is ignored


def test_sync_update_frame_matches_pycrdt() -> None:
    update = _real_update()
    assert p.sync_frame(p.SYNC_UPDATE, update) == create_update_message(update)


def test_unknown_sync_kind() -> None:
    with pytest.raises(ProtocolError, match="unknown sync message type 3"):
        p.parse_sync(b"\x00\x03\x00")


def test_every_truncation_of_a_sync_frame_raises_protocol_error() -> None:
    frame = p.sync_frame(p.SYNC_UPDATE, _real_update())
    for end in range(len(frame)):
        with pytest.raises(ProtocolError):
            p.parse_sync(frame[:end])


# -- awareness --------------------------------------------------------------------------------------


def _state(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def test_awareness_length_prefix_counts_bytes_not_characters() -> None:
    # lib0 frame built by hand: [1 awareness][len][count 1][clientID 1][clock 2][len 7]"José"
    # '"José"' is 6 characters but 7 UTF-8 bytes; a character count would write 6 and cut the é.
    state = '"José"'.encode()
    hand_built = b"\x01" + b"\x0b" + b"\x01" + b"\x01" + b"\x02" + b"\x07" + b'"Jos\xc3\xa9"'
    assert p.awareness_frame([AwarenessEntry(1, 2, state)]) == hand_built
    assert p.parse_awareness(hand_built) == [AwarenessEntry(1, 2, state)]


@pytest.mark.parametrize(
    "name", ["José", "😀 emoji (4 bytes, 2 UTF-16 units)", "日本語のユーザー", "e\u0301 combining", "x" * 300]
)
def test_awareness_round_trip_non_ascii(name: str) -> None:
    entries = [
        AwarenessEntry(2**53 - 1, 7, _state({"user": {"name": name, "color": "#f0a"}, "cursor": None})),
        AwarenessEntry(42, 0, b"null"),
        AwarenessEntry(0, 2**32, _state({})),
    ]
    frame = p.awareness_frame(entries)
    parsed = p.parse_awareness(frame)
    assert parsed == entries
    assert json.loads(parsed[0].state)["user"]["name"] == name
    assert [e.removed for e in parsed] == [False, True, False]
    # the inner length is the byte length of everything after it
    r = Reader(frame, 1)
    inner = r.var_bytes()
    assert r.pos == len(frame)
    assert Reader(inner).var_uint() == 3


def test_awareness_empty_update() -> None:
    assert p.parse_awareness(p.awareness_frame([])) == []


def test_awareness_codec_leaves_state_validation_to_the_room() -> None:
    """Invalid UTF-8 in a state is not a framing error: the room drops that entry (sync/awareness.py)
    and keeps the connection, so the codec returns it as sent."""
    state = b'"' + bytes([0xFF, 0xFE]) + b'"'
    inner = b"\x01" + b"\x01" + b"\x01" + p.write_var_bytes(state)
    (entry,) = p.parse_awareness(b"\x01" + p.write_var_bytes(inner))
    assert entry.state == state


def test_awareness_too_many_entries_refused() -> None:
    ok = p.awareness_frame([AwarenessEntry(i, 1, b"{}") for i in range(10_000)])
    assert len(p.parse_awareness(ok)) == 10_000
    inner = p.write_var_uint(10_001) + b"\x01\x01\x02{}" * 10_001
    with pytest.raises(ProtocolError, match="too many"):
        p.parse_awareness(b"\x01" + p.write_var_bytes(inner))


def test_every_truncation_of_an_awareness_frame_raises_protocol_error() -> None:
    entries = [AwarenessEntry(1, 1, _state({"user": {"name": "José 😀"}})), AwarenessEntry(2, 3, b"null")]
    frame = p.awareness_frame(entries)
    for end in range(len(frame)):
        with pytest.raises(ProtocolError):
            p.parse_awareness(frame[:end])
    # a consistent outer length around a truncated inner update
    inner = Reader(frame, 1).var_bytes()
    for end in range(len(inner)):
        with pytest.raises(ProtocolError):
            p.parse_awareness(b"\x01" + p.write_var_bytes(inner[:end]))


VALID_TEXT = st.text(st.characters(exclude_categories=["Cs"]))  # anything UTF-8 can carry


@given(st.lists(st.tuples(st.integers(0, 2**53), st.integers(0, 2**32), VALID_TEXT), max_size=20))
def test_awareness_round_trip_any_text(items: list[tuple[int, int, str]]) -> None:
    entries = [AwarenessEntry(c, k, _state({"user": {"name": s}})) for c, k, s in items]
    assert p.parse_awareness(p.awareness_frame(entries)) == entries


def test_is_crdt_failure() -> None:
    assert p.is_crdt_failure(ValueError("bad update"))
    assert not p.is_crdt_failure(KeyboardInterrupt())
    assert not p.is_crdt_failure(SystemExit())

    class PanicException(BaseException):  # what pyo3 raises when Yrs panics
        pass

    assert p.is_crdt_failure(PanicException())
