"""What the CRDT library holds back: structs and deletes that wait for IDs nobody has sent yet.

An update can arrive before one it depends on (offline edits, reconnect races). Yjs and Yrs keep its
waiting part aside until the dependency arrives; Yjs's ``encodeStateAsUpdate`` includes that part, but
pycrdt's ``Doc.get_update()`` omits it (and pycrdt binds no API that says anything is waiting). Without
this module a newcomer would never receive it, and a snapshot (hence a restart) would lose it: the
author would keep "first second" and everyone else "first " once the dependency arrives.

``HeldBack`` keeps the waiting part: the structs beyond the document's state vector (one update,
computed with pycrdt's own ``get_update(update, state_vector)``) and the deletes of IDs beyond it.
It is checked only after applying an update that may wait (the guard's index says so) or while
something is held; otherwise the hot path pays one test. See docs/design/sync-integrity.md,
"Held-back structs".
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

from pycrdt import Doc, get_update, merge_updates

from .protocol import ProtocolError, Reader, is_crdt_failure
from .updates import Update, decode, encode_delete_set


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """A v1 state vector as ``{client: next clock}`` (``ProtocolError`` if it does not decode)."""
    r = Reader(sv)
    count = r.var_uint()
    if count > len(sv):
        raise ProtocolError("bad state vector")
    out: dict[int, int] = {}
    for _ in range(count):
        client = r.var_uint()
        out[client] = r.var_uint()
    return out


class IdRanges:
    """Sets of IDs as sorted, disjoint, non-touching ranges per client (deleted IDs, waiting deletes)."""

    __slots__ = ("_starts", "_ends")

    def __init__(self) -> None:
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self._starts)

    def covers(self, client: int, start: int, end: int) -> bool:
        starts = self._starts.get(client)
        if not starts:
            return False
        i = bisect.bisect_right(starts, start) - 1
        return i >= 0 and self._ends[client][i] >= end

    def add(self, client: int, start: int, end: int) -> None:
        starts = self._starts.setdefault(client, [])
        ends = self._ends.setdefault(client, [])
        j = bisect.bisect_right(starts, end)  # the ranges [i, j) overlap or touch [start, end)
        if j and ends[j - 1] >= end and starts[j - 1] <= start:
            return  # already held: a repeated delete set, the common case
        i = bisect.bisect_left(ends, start)
        if i < j:
            start, end = min(start, starts[i]), max(end, ends[j - 1])
        starts[i:j] = [start]
        ends[i:j] = [end]

    def add_all(self, ranges: Iterable[tuple[int, int, int]]) -> None:
        """``add`` each (client, clock, length); a repeated delete set costs a bisect per range.
        New ranges are merged in per client at once: one by one, a crafted delete set of many ranges in
        descending order costs a list insertion at the front each (quadratic: a minute for 1 MB)."""
        all_starts, all_ends = self._starts, self._ends
        client_of: int | None = None
        starts: list[int] = []
        ends: list[int] = []
        fresh: dict[int, list[tuple[int, int]]] = {}
        for client, clock, length in ranges:
            if client != client_of:
                client_of = client
                starts, ends = all_starts.setdefault(client, []), all_ends.setdefault(client, [])
            end = clock + length
            j = bisect.bisect_right(starts, end)
            if j and ends[j - 1] >= end and starts[j - 1] <= clock:
                continue
            fresh.setdefault(client, []).append((clock, end))
        for client, new in fresh.items():
            self._merge(client, new)

    def _merge(self, client: int, new: list[tuple[int, int]]) -> None:
        """Merge ``new`` (start, end) ranges of ``client`` in: one by one while that is cheaper (a few
        ranges: a bisect and a list insertion each), else by rebuilding the window of held ranges they
        reach (linear in that window, in Python)."""
        starts = self._starts.setdefault(client, [])
        ends = self._ends.setdefault(client, [])
        lo = bisect.bisect_left(ends, min(new)[0])
        hi = bisect.bisect_right(starts, max(end for _, end in new))
        if len(new) * (len(starts) + len(new)) < 500 * (hi - lo + len(new)):  # an insertion moves ~1 ns a pointer
            for start, end in new:
                self.add(client, start, end)
            return
        out_starts: list[int] = []
        out_ends: list[int] = []
        for start, end in sorted([*zip(starts[lo:hi], ends[lo:hi], strict=True), *new]):
            if out_ends and start <= out_ends[-1]:
                if end > out_ends[-1]:
                    out_ends[-1] = end
            else:
                out_starts.append(start)
                out_ends.append(end)
        starts[lo:hi] = out_starts
        ends[lo:hi] = out_ends

    def drop_below(self, client: int, clock: int) -> None:
        """Forget the IDs of ``client`` below ``clock``."""
        starts, ends = self._starts.get(client), self._ends.get(client)
        if not starts or not ends:
            return
        i = bisect.bisect_right(ends, clock)  # ranges [0, i) end at or below it
        del starts[:i], ends[:i]
        if starts and starts[0] < clock:
            starts[0] = clock
        if not starts:
            del self._starts[client], self._ends[client]

    def within(self, client: int, start: int, end: int) -> list[tuple[int, int, int]]:
        """(client, clock, length) for the parts of [start, end) in this set."""
        starts = self._starts.get(client)
        if not starts:
            return []
        ends = self._ends[client]
        out = []
        i = bisect.bisect_right(ends, start)  # the first range ending after start
        while i < len(starts) and starts[i] < end:
            lo, hi = max(start, starts[i]), min(end, ends[i])
            out.append((client, lo, hi - lo))
            i += 1
        return out

    def clients(self) -> list[int]:
        return list(self._starts)

    def ranges(self) -> list[tuple[int, int, int]]:
        """(client, clock, length) for every range."""
        return [(c, s, e - s) for c, starts in self._starts.items() for s, e in zip(starts, self._ends[c], strict=True)]


def _structs_beyond(update: bytes, delete_set_offset: int, sv_bytes: bytes) -> bytes | None:
    """The structs of ``update`` beyond ``sv_bytes``, as an update with an empty delete set."""
    if update[0] == 0:  # no structs at all
        return None
    rest = get_update(update[:delete_set_offset] + b"\x00", sv_bytes)
    return rest if rest[0] != 0 else None


class HeldBack:
    """The waiting part of a live document, kept in step as updates are applied: its structs (one
    update with an empty delete set) and its deletes (``IdRanges``, so a delete set sent again and
    again is held once)."""

    __slots__ = ("_structs", "_deletes", "_update", "_sv_bytes", "_sv", "_clients")

    def __init__(self, structs: bytes | None = None, deletes: IdRanges | None = None) -> None:
        self._structs = structs
        self._deletes = deletes or IdRanges()
        self._update: bytes | None = None  # the two as one update, built when asked for
        self._sv_bytes = b""  # the document's state vector when last settled, and decoded
        self._sv: dict[int, int] = {}
        self._clients: set[int] | None = None  # the clients of the held structs, once needed

    @property
    def empty(self) -> bool:
        return self._structs is None and not self._deletes

    @property
    def structs(self) -> bool:
        """Some structs wait (not only deletes)."""
        return self._structs is not None

    @property
    def update(self) -> bytes | None:
        """What waits, as one update; None if nothing does."""
        if self._update is None and not self.empty:
            structs = self._structs[:-1] if self._structs is not None else b"\x00"  # drop its empty delete set
            self._update = structs + encode_delete_set(self._deletes.ranges())
        return self._update

    def settle(self, doc: Doc[Any], update: bytes, decoded: Update, may_wait: bool) -> bool:
        """After ``update`` was applied to ``doc``: keep what still waits. True if part of ``update``
        itself waits. A no-op unless ``may_wait`` or something is already held. What is held is only
        looked at again when the document's state vector moved (something integrated)."""
        if self.empty and not may_wait:
            return False
        sv_bytes = doc.get_state()
        if sv_bytes != self._sv_bytes:
            sv = decode_state_vector(sv_bytes)
            if self._structs is not None and self._moved(sv):
                self._structs = _structs_beyond(self._structs, len(self._structs) - 1, sv_bytes)
                self._clients = None
            for client in self._deletes.clients():
                if sv.get(client, 0) != self._sv.get(client, 0):
                    self._deletes.drop_below(client, sv.get(client, 0))
            self._sv_bytes, self._sv = sv_bytes, sv
            self._update = None
        own = _structs_beyond(update, decoded.delete_set_offset, sv_bytes)
        if own is not None:
            clients = {s.client for s in decoded.structs}  # those of ``own`` and maybe more: a superset will do
            if self._structs is None:
                self._structs, self._clients = own, clients
            else:
                self._structs = merge_updates(self._structs, own)
                if self._clients is not None:
                    self._clients |= clients
        waits = own is not None
        beyond = []
        for client, clock, length in decoded.deletes:
            known = self._sv.get(client, 0)
            if clock + length > known:
                start = max(clock, known)
                beyond.append((client, start, clock + length - start))
        if beyond:
            self._deletes.add_all(beyond)
            waits = True
        if waits:
            self._update = None
        return waits

    def _moved(self, sv: dict[int, int]) -> bool:
        """Whether ``sv`` moved for a client of the held structs: only then can some of them have
        integrated. Re-encoding what is held after every keystroke of anyone cost a crafted update
        that never integrates about its size in CPU per keystroke."""
        if self._clients is None:
            assert self._structs is not None
            self._clients = {s.client for s in decode(self._structs).structs}
        return any(sv.get(client, 0) != self._sv.get(client, 0) for client in self._clients)

    def full_state(self, doc: Doc[Any]) -> bytes:
        """The document as a Yjs peer would encode it: its integrated state and what waits."""
        state = doc.get_update()
        held = self.update
        return state if held is None else merge_updates(state, held)

    @classmethod
    def of_stored(cls, doc: Doc[Any], pieces: Iterable[bytes]) -> HeldBack:
        """What of the stored ``pieces`` (a snapshot, then the log rows after it) a document rebuilt
        from them holds back."""
        sv_bytes = doc.get_state()
        sv = decode_state_vector(sv_bytes)
        structs: list[bytes] = []
        deletes = IdRanges()
        for piece in pieces:
            try:
                rest = get_update(piece, sv_bytes)  # the structs beyond sv, and the piece's whole delete set
                if rest == b"\x00\x00":  # nothing (the common case)
                    continue
                decoded = decode(rest)
                if decoded.structs:
                    structs.append(rest[: decoded.delete_set_offset] + b"\x00")
                for client, clock, length in decoded.deletes:
                    if clock + length > (known := sv.get(client, 0)):
                        deletes.add(client, max(clock, known), clock + length)
            except BaseException as exc:  # a row the rebuild could apply but not re-encode: skip it
                if not is_crdt_failure(exc):
                    raise
        merged = None if not structs else structs[0] if len(structs) == 1 else merge_updates(*structs)
        return cls(merged, deletes)
