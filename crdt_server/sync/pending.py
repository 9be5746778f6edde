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


Deletes = list[tuple[int, int, int]]  # (client, clock, length)


def _deletes_beyond(deletes: Deletes, sv: dict[int, int]) -> Deletes:
    """The part of each delete range beyond ``sv`` (IDs the document does not hold yet)."""
    out = []
    for client, clock, length in deletes:
        known = sv.get(client, 0)
        if clock + length > known:
            start = max(clock, known)
            out.append((client, start, clock + length - start))
    return out


def _structs_beyond(update: bytes, delete_set_offset: int, sv_bytes: bytes) -> bytes | None:
    """The structs of ``update`` beyond ``sv_bytes``, as an update with an empty delete set."""
    if update[0] == 0:  # no structs at all
        return None
    rest = get_update(update[:delete_set_offset] + b"\x00", sv_bytes)
    return rest if rest[0] != 0 else None


class HeldBack:
    """The waiting part of a live document, kept in step as updates are applied: its structs (one
    update with an empty delete set) and its deletes."""

    __slots__ = ("_structs", "_deletes", "_update")

    def __init__(self, structs: bytes | None = None, deletes: Deletes | None = None) -> None:
        self._structs = structs
        self._deletes = deletes or []
        self._update: bytes | None = None  # the two as one update, built when asked for

    @property
    def structs(self) -> bool:
        """Some structs wait (not only deletes)."""
        return self._structs is not None

    @property
    def update(self) -> bytes | None:
        """What waits, as one update; None if nothing does."""
        if self._update is None and (self._structs is not None or self._deletes):
            structs = self._structs[:-1] if self._structs is not None else b"\x00"  # drop its empty delete set
            self._update = structs + encode_delete_set(self._deletes)
        return self._update

    def settle(self, doc: Doc[Any], update: bytes, decoded: Update, may_wait: bool) -> bool:
        """After ``update`` was applied to ``doc``: keep what still waits. True if part of ``update``
        itself waits. A no-op unless ``may_wait`` or something is already held."""
        if self._structs is None and not self._deletes and not may_wait:
            return False
        sv_bytes = doc.get_state()
        sv = decode_state_vector(sv_bytes)
        held = None if self._structs is None else _structs_beyond(self._structs, len(self._structs) - 1, sv_bytes)
        own_structs = _structs_beyond(update, decoded.delete_set_offset, sv_bytes)
        structs = [part for part in (held, own_structs) if part is not None]
        own_deletes = _deletes_beyond(decoded.deletes, sv)
        self._structs = None if not structs else structs[0] if len(structs) == 1 else merge_updates(*structs)
        self._deletes = _deletes_beyond(self._deletes, sv) + own_deletes
        self._update = None
        return own_structs is not None or bool(own_deletes)

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
        deletes: Deletes = []
        for piece in pieces:
            try:
                rest = get_update(piece, sv_bytes)  # the structs beyond sv, and the piece's whole delete set
                if rest == b"\x00\x00":  # nothing (the common case)
                    continue
                decoded = decode(rest)
                if decoded.structs:
                    structs.append(rest[: decoded.delete_set_offset] + b"\x00")
                deletes.extend(_deletes_beyond(decoded.deletes, sv))
            except BaseException as exc:  # a row the rebuild could apply but not re-encode: skip it
                if not is_crdt_failure(exc):
                    raise
        merged = None if not structs else structs[0] if len(structs) == 1 else merge_updates(*structs)
        return cls(merged, deletes)
