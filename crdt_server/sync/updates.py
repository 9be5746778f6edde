"""A decoder of Yjs v1 updates: which item IDs an update inserts, where they live, what it deletes.

Why our own: an update alone does not say which root type it touches — a struct names its parent
only when it has neither origin nor right origin, so a keystroke or an overwrite of a map key names
none, and delete sets are bare ID ranges. pycrdt exposes no struct decoder, so the server reads the
format itself (yjs ``Item.write`` / ``readUpdateV1``, lib0 encoding) and resolves each struct's place
through ``IdIndex``, built from the document and fed every applied update. Everything here is
bounds-checked: a crafted update raises ``ProtocolError``, never anything else.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from . import exact as exact_rules
from .protocol import ProtocolError, Reader, UnsupportedContent

# content refs (yjs src/structs/*: contentRefs)
GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
_XML_ELEMENT, _XML_HOOK = 3, 5  # type refs that carry a name
_YJS_TYPES = frozenset((0, 1, 2, 3, 4, 6))  # Array, Map, Text, XmlElement, XmlFragment, XmlText
_SAFE_INTEGER = 2**53 - 1  # Number.MAX_SAFE_INTEGER: lib0 reads no larger integer
_UNSAFE_INTEGER = _SAFE_INTEGER + 1
_NEGATIVE_ZERO = b"\x80" + bytes(7)  # an IEEE 754 -0.0, big-endian (a float32 is its first 4 bytes)
MAX_DEPTH = 64  # nesting of lib0 "any" values a client's update may hold (deeper ones are neutralised)
MAX_READ_DEPTH = 512  # nesting read at all (a bounded recursion; Yjs writes any depth, no editor sends it)


Place = tuple[str, str | None]  # (root name, top-level key in that root, for a map)
GC_PLACE: Place = ("", None)  # garbage-collected IDs: they belong nowhere any more


class Struct(NamedTuple):
    """One struct of an update: IDs [clock, clock + length) of ``client``, and where it attaches.

    A named tuple, not a frozen dataclass: one is made per struct of every update (each keystroke),
    and a frozen dataclass's ``__init__`` costs five times as much."""

    client: int
    clock: int
    length: int
    ref: int
    origin: tuple[int, int] | None = None
    right_origin: tuple[int, int] | None = None
    parent_root: str | None = None  # the parent is a root type of this name
    parent_id: tuple[int, int] | None = None  # the parent is the type created by this item
    parent_sub: str | None = None  # the map key, for a map entry that names its parent
    text: str | None = None  # the inserted string, for string content

    @property
    def end(self) -> int:
        return self.clock + self.length


@dataclass(frozen=True)
class Inexact:
    """A struct whose content the server would not keep exactly (``sync/exact.py``): its byte spans in
    the update, so ``sync/neutral.py`` can rewrite it as deleted content, and why."""

    index: int  # in ``Update.structs``
    info_at: int  # its info byte
    content_at: int  # where its content starts (after origin, right origin, parent)
    end: int  # where it ends
    reason: str


@dataclass
class Update:
    structs: list[Struct]
    deletes: list[tuple[int, int, int]]  # (client, clock, length)
    delete_set_offset: int  # where the delete set starts in the update's bytes
    inexact: Sequence[Inexact] = ()  # with ``decode(exact=True)`` only
    # each struct's place, once resolved against an index (the guard's check; reused when recording)
    placed: list[tuple[Struct, Place | None]] | None = field(default=None, compare=False, repr=False)


def _var_string(r: Reader) -> str:
    raw = r.var_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("string is not UTF-8") from None


def _id(r: Reader) -> tuple[int, int]:
    return r.var_uint(), r.var_uint()


def _skip(r: Reader, n: int) -> None:
    if r.pos + n > len(r.buf):
        raise ProtocolError("truncated update")
    r.pos += n


def _var_int(r: Reader) -> int:
    """Skip a lib0 signed varint; returns -1 for -0 (the sign bit and no magnitude), else its magnitude,
    capped just above ``Number.MAX_SAFE_INTEGER`` (lib0 refuses to read more)."""
    if r.pos >= len(r.buf):
        raise ProtocolError("truncated varint")
    first = b = r.buf[r.pos]
    r.pos += 1
    magnitude = b & 0x3F
    shift = 6
    while b & 0x80:
        if r.pos >= len(r.buf) or shift > 70:
            raise ProtocolError("bad varint")
        b = r.buf[r.pos]
        r.pos += 1
        magnitude |= (b & 0x7F) << shift
        shift += 7
    if not magnitude and first & 0x40:
        return -1
    return min(magnitude, _UNSAFE_INTEGER)


def _any(r: Reader, depth: int = 0, exact: bool = False) -> None:
    """Skip one lib0 ``any`` value; with ``exact``, refuse what Yrs would not write back the same
    (``sync/exact.py``)."""
    if depth > MAX_DEPTH:
        if exact:
            raise UnsupportedContent(f"a value nested deeper than {MAX_DEPTH} levels")
        if depth > MAX_READ_DEPTH:
            raise ProtocolError("value nested too deeply")
    if r.pos >= len(r.buf):
        raise ProtocolError("truncated value")
    kind = r.buf[r.pos]
    r.pos += 1
    if kind in (127, 126, 121, 120):  # undefined, null, false, true
        return
    if kind == 125:
        magnitude = _var_int(r)
        if exact and (magnitude < 0 or magnitude > _SAFE_INTEGER):
            if magnitude < 0:
                raise UnsupportedContent(exact_rules.NEGATIVE_ZERO)
            raise ProtocolError("integer out of range")  # Yjs cannot read it: no client sends it
    elif kind in (124, 123):  # float32, float64 (big-endian): -0.0 is the sign bit alone
        size = 4 if kind == 124 else 8
        if exact and r.buf[r.pos:r.pos + size] == _NEGATIVE_ZERO[:size]:
            raise UnsupportedContent(exact_rules.NEGATIVE_ZERO)
        _skip(r, size)
    elif kind == 122:
        if exact:
            raise UnsupportedContent("a BigInt (read back as a number)")
        _skip(r, 8)
    elif kind in (119, 116):  # string, Uint8Array
        r.var_bytes()
    elif kind == 118:  # object
        n = r.var_uint()
        if exact and n > 1:
            raise UnsupportedContent(exact_rules.SEVERAL_KEYS)
        for _ in range(n):
            r.var_bytes()
            _any(r, depth + 1, exact)
    elif kind == 117:  # array
        for _ in range(r.var_uint()):
            _any(r, depth + 1, exact)
    else:
        raise ProtocolError(f"unknown value type {kind}")


def _doc_options(r: Reader) -> None:
    """A subdocument's options, exactly: an object whose ``meta`` Yrs would drop is refused."""
    if r.buf[r.pos:r.pos + 1] != b"\x76":  # 118, an object: what Yjs writes
        raise UnsupportedContent("subdocument options that are not an object")
    r.pos += 1
    for _ in range(r.var_uint()):
        if r.var_bytes() == b"meta":
            raise UnsupportedContent("a subdocument's meta (dropped by the CRDT library)")
        _any(r, 1, True)


def _utf16_length(s: str) -> int:
    return len(s) + sum(1 for ch in s if ord(ch) > 0xFFFF)


def _content(r: Reader, ref: int, exact: bool) -> tuple[int, str | None]:
    """Skip an item's content; returns (length in clocks, the string for string content)."""
    if ref == STRING:
        s = _var_string(r)
        return _utf16_length(s), s
    if ref == DELETED:
        return r.var_uint(), None
    if ref == JSON:
        if exact:  # legacy (Yjs < 13 wrote it); Yrs reads one string more than it holds
            raise UnsupportedContent("legacy JSON content")
        n = r.var_uint()
        for _ in range(n):
            r.var_bytes()
        return n, None
    if ref == BINARY:
        r.var_bytes()
        return 1, None
    if ref == EMBED:
        value = r.var_bytes()
        if exact:
            exact_rules.check_json(value)
        return 1, None
    if ref == FORMAT:
        r.var_bytes()
        value = r.var_bytes()
        if exact:
            exact_rules.check_json(value)
        return 1, None
    if ref == TYPE:
        type_ref = r.var_uint()
        if exact and type_ref not in _YJS_TYPES:  # Yrs reads a hook without its name; 7+ Yjs cannot read
            raise UnsupportedContent("Y.XmlHook" if type_ref == _XML_HOOK else f"type {type_ref}")
        if type_ref in (_XML_ELEMENT, _XML_HOOK):
            r.var_bytes()
        return 1, None
    if ref == ANY:
        n = r.var_uint()
        for _ in range(n):
            _any(r, 0, exact)
        return n, None
    if ref == DOC:
        r.var_bytes()
        if exact:
            _doc_options(r)
        else:
            _any(r)
        return 1, None
    raise ProtocolError(f"unknown content type {ref}")


def decode(update: bytes, *, exact: bool = False) -> Update:
    """The structs and the delete set of a v1 update (``ProtocolError`` if it does not decode).

    ``exact``: a client's update, checked for content the server would not keep exactly
    (``sync/exact.py``); such structs are listed in ``inexact``. Updates the server made or Yrs
    encoded are not checked."""
    r = Reader(update)
    structs: list[Struct] = []
    inexact: list[Inexact] | None = None  # made only when needed: nothing more to allocate per update
    for _ in range(r.var_uint()):
        count, client, clock = r.var_uint(), r.var_uint(), r.var_uint()
        if count > len(update):
            raise ProtocolError("bad struct count")
        for _ in range(count):
            if r.pos >= len(update):
                raise ProtocolError("truncated update")
            info_at = r.pos
            info = update[info_at]
            r.pos += 1
            ref = info & 0x1F
            if ref in (GC, SKIP):
                length = r.var_uint()
                structs.append(Struct(client, clock, length, ref))
            else:
                origin = _id(r) if info & 0x80 else None
                right = _id(r) if info & 0x40 else None
                parent_root = parent_id = parent_sub = None
                if not info & 0xC0:
                    if r.var_uint() == 1:
                        parent_root = _var_string(r)
                    else:
                        parent_id = _id(r)
                    if info & 0x20:
                        parent_sub = _var_string(r)
                content_at = r.pos
                try:
                    length, text = _content(r, ref, exact)
                except UnsupportedContent as exc:  # read it again, as Yjs does, to find where it ends
                    r.pos = content_at
                    length, text = _content(r, ref, False)
                    inexact = inexact or []
                    inexact.append(Inexact(len(structs), info_at, content_at, r.pos, str(exc)))
                structs.append(Struct(client, clock, length, ref, origin, right, parent_root, parent_id, parent_sub, text))
            if length <= 0:
                raise ProtocolError("empty struct")
            clock += length
    offset = r.pos
    deletes: list[tuple[int, int, int]] = []
    for _ in range(r.var_uint()):
        client = r.var_uint()
        for _ in range(r.var_uint()):
            clock, length = r.var_uint(), r.var_uint()
            deletes.append((client, clock, length))
    # Bytes after the delete set are ignored, as Yjs and Yrs ignore them.
    return Update(structs, deletes, offset, inexact or ())


def encode_delete_set(deletes: list[tuple[int, int, int]]) -> bytes:
    """A v1 delete set (the tail of an update) for these ranges."""
    from .protocol import write_var_uint

    by_client: dict[int, list[tuple[int, int]]] = {}
    for client, clock, length in deletes:
        by_client.setdefault(client, []).append((clock, length))
    out = bytearray(write_var_uint(len(by_client)))
    for client, ranges in by_client.items():
        out += write_var_uint(client) + write_var_uint(len(ranges))
        for clock, length in ranges:
            out += write_var_uint(clock) + write_var_uint(length)
    return bytes(out)




Local = Callable[[tuple[int, int]], tuple[int | None, Place | None]]


def _outside(ref: tuple[int, int]) -> tuple[int | None, Place | None]:
    """``IdIndex._attempt``'s lookup for a one-struct update: nothing else in it to attach to."""
    return None, None


class IdIndex:
    """Item IDs -> the root type (and top-level map key) they belong to, as ranges per client."""

    def __init__(self) -> None:
        self._starts: dict[int, list[int]] = {}
        self._ranges: dict[int, list[tuple[int, int, Place]]] = {}

    def state(self, client: int) -> int:
        """The next clock of ``client`` this index knows (its state vector entry)."""
        ranges = self._ranges.get(client)
        return ranges[-1][1] if ranges else 0

    def find(self, client: int, clock: int) -> Place | None:
        starts = self._starts.get(client)
        if not starts:
            return None
        i = bisect.bisect_right(starts, clock) - 1
        if i < 0:
            return None
        start, end, place = self._ranges[client][i]
        return place if start <= clock < end else None

    def span(self, client: int, clock: int) -> tuple[Place | None, int]:
        """The place of ``clock`` and the first clock after its range (or of the next known range)."""
        starts = self._starts.get(client) or []
        i = bisect.bisect_right(starts, clock) - 1
        ranges = self._ranges.get(client) or []
        if i >= 0 and ranges[i][0] <= clock < ranges[i][1]:
            return ranges[i][2], ranges[i][1]
        return None, starts[i + 1] if i + 1 < len(starts) else clock + 1

    def add(self, client: int, start: int, end: int, place: Place) -> None:
        if self.find(client, start) is not None:  # already known (recorded when queued, or a resend)
            return
        ranges = self._ranges.setdefault(client, [])
        starts = self._starts.setdefault(client, [])
        if ranges and ranges[-1][1] == start and ranges[-1][2] == place:
            ranges[-1] = (ranges[-1][0], end, place)  # typing extends the last range
            return
        i = bisect.bisect_left(starts, start)
        ranges.insert(i, (start, end, place))
        starts.insert(i, start)

    def places(self, update: Update) -> list[tuple[Struct, Place | None]]:
        """Each struct with its place, resolved through the index and earlier structs of the same
        update (in any order); None when it depends on IDs nobody has seen yet (pending).
        Remembered on the update, so the check and the recording after apply resolve it once.

        Each struct is resolved once, following its origin (else right origin, or its parent) into
        the update or the index: an update's structs may depend on each other in any order, and a
        pass over all of them per step of a chain was cubic (20,000 scattered inserts: 20 s)."""
        if update.placed is not None and all(place is not None for _, place in update.placed):
            return update.placed
        structs = [s for s in update.structs if s.ref != SKIP]
        if len(structs) == 1:  # a keystroke: what the resolution below comes to for one struct
            alone = structs[0]
            update.placed = [(alone, GC_PLACE if alone.ref == GC else self._attempt(alone, _outside)[1])]
            return update.placed
        starts: dict[int, list[int]] = {}  # per client: the clocks of its structs here, ascending
        at: dict[int, list[int]] = {}  # and their positions in ``structs``
        for i, s in enumerate(structs):
            client_starts = starts.setdefault(s.client, [])
            if client_starts and client_starts[-1] > s.clock:  # not in clock order: crafted
                j = bisect.bisect_left(client_starts, s.clock)
                client_starts.insert(j, s.clock)
                at[s.client].insert(j, i)
            else:
                client_starts.append(s.clock)
                at.setdefault(s.client, []).append(i)
        todo, busy, done = 0, 1, 2
        state = [done if s.ref == GC else todo for s in structs]
        result: list[Place | None] = [GC_PLACE if s.ref == GC else None for s in structs]

        def local(ref: tuple[int, int]) -> tuple[int | None, Place | None]:
            """(a struct of the update to resolve first, None) or (None, its place if resolved)."""
            clocks = starts.get(ref[0])
            if not clocks:
                return None, None
            j = bisect.bisect_right(clocks, ref[1]) - 1
            if j < 0:
                return None, None
            k = at[ref[0]][j]
            if not structs[k].clock <= ref[1] < structs[k].end:
                return None, None
            return (k, None) if state[k] == todo else (None, result[k] if state[k] == done else None)

        for i in range(len(structs)):
            stack = [i]
            while stack:
                j = stack[-1]
                if state[j] == done:
                    stack.pop()
                    continue
                state[j] = busy
                first, place = self._attempt(structs[j], local)
                if first is not None:
                    stack.append(first)
                    continue
                result[j], state[j] = place, done
                stack.pop()
        resolved = list(zip(structs, result, strict=True))
        update.placed = resolved
        return resolved

    def _attempt(self, s: Struct, local: Local) -> tuple[int | None, Place | None]:
        """(a struct of the update to resolve first, None) or (None, the place of ``s``): its root
        parent; else its parent item; else its origin, then its right origin. Each reference is
        looked up in the update (``local``), then, when not resolved there (absent, pending, or a
        cycle), in the index."""
        if s.parent_root is not None:
            return None, (s.parent_root, s.parent_sub)
        for ref in ((s.parent_id,) if s.parent_id is not None else (s.origin, s.right_origin)):
            if ref is None:
                continue
            first, place = local(ref)
            if first is not None:
                return first, None
            if place is None:
                place = self.find(*ref)
            if s.parent_id is not None:
                return None, place if place is None or place[1] is not None else (place[0], s.parent_sub)
            if place is not None:
                return None, place
        return None, None

    def record(self, update: Update) -> None:
        """Remember where the structs of an applied update live."""
        for s, place in self.places(update):
            if place is not None:
                self.add(s.client, s.clock, s.end, place)


